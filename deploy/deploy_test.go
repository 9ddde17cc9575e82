package deploy

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestSystemdUnit: systemd-analyze verifies the unit (with a binary that
// exists here) and rates its exposure OK; skipped where systemd is not.
func TestSystemdUnit(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("no systemd-analyze")
	}
	unit, err := os.ReadFile("atoll.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "StateDirectory=atoll", "DynamicUser=yes", "ExecReload=/bin/kill -HUP $MAINPID"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	p := filepath.Join(t.TempDir(), "atoll.service")
	os.WriteFile(p, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/atoll", "/bin/true")), 0o644)
	if out, err := exec.Command("systemd-analyze", "verify", p).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, _ := exec.Command("systemd-analyze", "security", "--offline=yes", p).CombinedOutput()
	if !regexp.MustCompile(`Overall exposure level for atoll.service: [0-2]\.\d OK`).Match(out) {
		t.Errorf("exposure worse than OK:\n%s", out[max(0, len(out)-200):])
	}
}

// TestCompose: 9 nodes in 3 regions; each node's certificate is made for
// the IP it binds, with its own ID and region; every node joins all the
// others and waits for 9; the Dockerfile builds the binary the certs
// service runs.
func TestCompose(t *testing.T) {
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Command     any               `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			Networks    any               `yaml:"networks"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	certs, ok := c.Services["certs"]
	if !ok {
		t.Fatal("no certs service")
	}
	script := strings.Join(asStrings(certs.Command), "\n")
	regions := map[string]int{}
	var ips []string
	for name, s := range c.Services {
		if name == "certs" {
			continue
		}
		region, ip := s.Environment["ATOLL_REGION"], s.Environment["ATOLL_BIND"]
		regions[region]++
		ips = append(ips, ip)
		if net.ParseIP(ip) == nil || !strings.Contains(yamlString(s.Networks), ip) {
			t.Errorf("%s binds %q, not its network address", name, ip)
		}
		want := "--out /certs/" + name + " --region " + region + " --id " + name + " --ip " + ip
		if !strings.Contains(script, want) {
			t.Errorf("%s: no certificate made with %q", name, want)
		}
		if !slices.Contains(asStrings(s.Command), "/certs/"+name) {
			t.Errorf("%s does not use its certificate: %v", name, s.Command)
		}
		if s.Environment["ATOLL_BOOTSTRAP_EXPECT"] != "9" || len(strings.Split(s.Environment["ATOLL_JOIN"], ",")) != 8 {
			t.Errorf("%s: bootstrap-expect %q, join %q", name, s.Environment["ATOLL_BOOTSTRAP_EXPECT"], s.Environment["ATOLL_JOIN"])
		}
	}
	if len(regions) != 3 || len(ips) != 9 {
		t.Fatalf("regions %v, %d nodes", regions, len(ips))
	}
	for r, n := range regions {
		if n != 3 {
			t.Errorf("region %s has %d nodes", r, n)
		}
	}
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"AS build", "-o /out/atoll ./cmd/atoll", "USER nonroot", `ENTRYPOINT ["/usr/local/bin/atoll"]`} {
		if !strings.Contains(string(df), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

// TestDashboard: the dashboard parses, and every metric its queries use
// is one a node exports (node/metrics.go).
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("../node/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`"(atoll_[a-z_]+)"`).FindAllSubmatch(src, -1) {
		exported[string(m[1])] = true
	}
	name := regexp.MustCompile(`atoll_[a-z_]+`)
	used := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
				if !exported[base] {
					t.Errorf("panel %q uses %s, which no node exports", p.Title, m)
				}
				used++
			}
		}
	}
	if len(d.Panels) < 10 || used < 15 {
		t.Fatalf("%d panels, %d metric uses", len(d.Panels), used)
	}
}

func asStrings(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			out = append(out, yamlString(e))
		}
		return out
	}
	return nil
}

func yamlString(v any) string {
	b, _ := yaml.Marshal(v)
	return strings.TrimSpace(string(b))
}
