package main

import (
	"fmt"
	"runtime/debug"

	"github.com/atollstore/atoll/node"
)

// version is set at release builds (-ldflags "-X main.version=v1.2.3");
// otherwise the module's version or the VCS revision tells.
var version = ""

func cmdVersion(args []string) error {
	if len(args) > 0 {
		return usagef("version takes no arguments")
	}
	v, rev, goVersion := version, "", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if v == "" {
			v = bi.Main.Version
		}
		var when, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = ", modified"
				}
			}
		}
		if rev != "" {
			rev = fmt.Sprintf(" (%s, %s%s)", rev[:min(12, len(rev))], when, dirty)
		}
	}
	if v == "" {
		v = "(devel)"
	}
	fmt.Printf("atoll %s%s %s\nformats: data directory %d, raft commands %d\n", v, rev, goVersion, node.DataFormat, node.CommandVersion)
	return nil
}
