package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigIsTheOnlySourceOfDefaults(t *testing.T) {
	d := DefaultConfig()
	d.Dir, d.Region, d.Bind = "/tmp/x", "eu", "127.0.0.1"
	if err := d.Validate(); err != nil {
		t.Fatalf("DefaultConfig plus the required fields does not validate: %v", err)
	}
	// A Config built from scratch gets exactly the same defaults.
	got := Config{Dir: d.Dir, Region: d.Region, Bind: d.Bind}.withDefaults()
	got.Logger, got.LogOutput = nil, nil
	if got.Timings != d.Timings || got.K != d.K || got.M != d.M || got.ChunkSize != d.ChunkSize || got.APIPort != d.APIPort ||
		got.Zone != d.Zone || got.Weight != d.Weight || got.DeadAfter != d.DeadAfter || got.OrphanGrace != d.OrphanGrace ||
		got.ScrubInterval != d.ScrubInterval || got.MaxBlobSize != d.MaxBlobSize || got.PutParallel != d.PutParallel ||
		got.RepairBandwidth != d.RepairBandwidth || got.RepairParallel != d.RepairParallel || got.ScrubBandwidth != d.ScrubBandwidth {
		t.Fatalf("withDefaults of an empty Config = %+v\nDefaultConfig = %+v", got, d)
	}
	// Ephemeral ports stay 0 (the kernel picks them).
	if e := (Config{EphemeralPorts: true}).withDefaults(); e.APIPort != 0 || e.GossipPort != 0 || e.RaftPort != 0 {
		t.Fatalf("ephemeral ports got defaults: %+v", e)
	}
	if err := LoopbackTimings().validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	base := DefaultConfig()
	base.Dir, base.Region, base.Bind = "/d", "eu", "127.0.0.1"
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no dir", func(c *Config) { c.Dir = "" }, "required"},
		{"no region", func(c *Config) { c.Region = "" }, "required"},
		{"k zero", func(c *Config) { c.K = 0 }, "erasure coding"},
		{"too many shards", func(c *Config) { c.K, c.M = 200, 100 }, "erasure coding"},
		{"chunk too big", func(c *Config) { c.ChunkSize = 1 << 30 }, "chunk size"},
		{"negative grace", func(c *Config) { c.OrphanGrace = -time.Second }, "orphan-grace"},
		{"short master key", func(c *Config) { c.MasterKey = []byte("short") }, "master key"},
		{"zero timing", func(c *Config) { c.Timings.HedgeAfter = 0 }, "timing"},
		{"no suspicion", func(c *Config) { c.Timings.GossipSuspicionMult = 0 }, "suspicion"},
	}
	for _, c := range cases {
		cfg := base
		c.mod(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate = %v, want an error about %q", c.name, err, c.want)
		}
	}
}

func TestDataFormat(t *testing.T) {
	dir := t.TempDir()
	if err := checkFormat(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, formatFile))
	if err != nil || !strings.Contains(string(b), fmt.Sprintf(`"format":%d`, DataFormat)) {
		t.Fatalf("format file %q, %v", b, err)
	}
	if err := checkFormat(dir); err != nil {
		t.Fatalf("reopening: %v", err)
	}
	os.WriteFile(filepath.Join(dir, formatFile), []byte(`{"format":1}`), 0o644)
	if err := checkFormat(dir); err != nil {
		t.Fatalf("an older format: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, formatFile)); !strings.Contains(string(b), fmt.Sprintf(`"format":%d`, DataFormat)) {
		t.Fatalf("an older directory was not marked with the current format: %q", b)
	}
	os.WriteFile(filepath.Join(dir, formatFile), []byte(fmt.Sprintf(`{"format":%d}`, DataFormat+1)), 0o644)
	if err := checkFormat(dir); err == nil || !strings.Contains(err.Error(), "newer Atoll") {
		t.Fatalf("a newer format: %v", err)
	}
	os.WriteFile(filepath.Join(dir, formatFile), []byte(`garbage`), 0o644)
	if err := checkFormat(dir); err == nil {
		t.Fatal("a garbled format file was accepted")
	}
}

// TestCostlyReusesInProportion: a count that took d to make is reused
// for about 20·d, then made again.
func TestCostlyReusesInProportion(t *testing.T) {
	var c costly
	calls := 0
	slow := func() int { calls++; time.Sleep(5 * time.Millisecond); return calls }
	if got := c.get(slow); got != 1 {
		t.Fatalf("first count %d", got)
	}
	if got := c.get(slow); got != 1 || calls != 1 {
		t.Fatalf("made again at once: %d (%d calls)", got, calls)
	}
	time.Sleep(150 * time.Millisecond) // > 20 × 5 ms
	if got := c.get(slow); got != 2 {
		t.Fatalf("not made again after 150 ms: %d", got)
	}
}
