package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// applyConfig fills in the flags the command line did not set, from
// ATOLL_<FLAG> environment variables (--s3-port: ATOLL_S3_PORT), then from
// the TOML file at path (keys are flag names: s3-port = 8900). Precedence:
// command line, environment, file, defaults. A key the file names that is
// no flag is an error, so a typo does not pass silently.
func applyConfig(fs *flag.FlagSet, path string) error {
	fromFile := map[string]any{}
	if path != "" {
		_, err := toml.DecodeFile(path, &fromFile)
		if err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
		var unknown []string
		for k := range fromFile {
			if fs.Lookup(k) == nil || k == "config" {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			slices.Sort(unknown)
			return usagef("config %s: unknown settings %s", path, strings.Join(unknown, ", "))
		}
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if onCommandLine[f.Name] || f.Name == "config" {
			return
		}
		env := "ATOLL_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := os.LookupEnv(env)
		source := "$" + env
		if !ok {
			var raw any
			if raw, ok = fromFile[f.Name]; ok {
				v, source = configValue(raw), path
			}
		}
		if ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: %w", source, f.Name, err))
			}
		}
	})
	if len(errs) > 0 {
		return usagef("%v", errs[0])
	}
	return nil
}

// configValue turns a TOML value into a flag's text: lists become
// comma-separated (join = ["10.0.2.5", "10.0.3.5"]).
func configValue(v any) string {
	if list, ok := v.([]any); ok {
		parts := make([]string, len(list))
		for i, e := range list {
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}
