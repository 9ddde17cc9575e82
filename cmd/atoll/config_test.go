package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigPrecedence: command line over $ATOLL_<FLAG> over the file
// over defaults; lists join; unknown keys and bad values are errors.
func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "atoll.toml")
	os.WriteFile(file, []byte("region = \"eu-west\"\ns3-port = 9000\ndead-after = \"10m\"\njoin = [\"10.0.2.5\", \"10.0.3.5\"]\nlog-level = \"debug\"\n"), 0o600)
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	region := fs.String("region", "", "")
	port := fs.Int("s3-port", 8900, "")
	dead := fs.Duration("dead-after", 5*time.Minute, "")
	join := fs.String("join", "", "")
	level := fs.String("log-level", "info", "")
	bind := fs.String("bind", "", "")
	fs.String("config", "", "")
	t.Setenv("ATOLL_S3_PORT", "9100")
	t.Setenv("ATOLL_LOG_LEVEL", "warn")
	if err := fs.Parse([]string{"--log-level", "error"}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfig(fs, file); err != nil {
		t.Fatal(err)
	}
	if *region != "eu-west" || *port != 9100 || *dead != 10*time.Minute || *join != "10.0.2.5,10.0.3.5" || *level != "error" || *bind != "" {
		t.Fatalf("region %q port %d dead-after %v join %q level %q bind %q", *region, *port, *dead, *join, *level, *bind)
	}

	os.WriteFile(file, []byte("regoin = \"typo\"\n"), 0o600)
	if err := applyConfig(fs, file); err == nil || !strings.Contains(err.Error(), "regoin") {
		t.Fatalf("an unknown key: %v", err)
	}
	os.WriteFile(file, []byte("dead-after = \"soon\"\n"), 0o600)
	fresh := flag.NewFlagSet("server", flag.ContinueOnError)
	fresh.Duration("dead-after", time.Minute, "")
	if err := applyConfig(fresh, file); err == nil || !strings.Contains(err.Error(), "dead-after") {
		t.Fatalf("a bad value: %v", err)
	}
}
