package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// Settings come from three places with the same names: the command line
// (--data-dir), the environment (BASALT_DATA_DIR) and a YAML or TOML file
// named by --config or BASALT_CONFIG (data-dir: ...). A flag given on the
// command line wins over the environment, which wins over the file, which
// wins over the default.

// addConfigFlag gives a server command its --config flag and loads the
// settings before it runs.
func addConfigFlag(cmd *cobra.Command) {
	cmd.Flags().String("config", "", "a YAML (.yaml, .yml) or TOML (.toml) file of settings named like the flags (env: BASALT_CONFIG)")
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error { return applySettings(cmd.Flags(), os.LookupEnv) }
}

// envAnnotation names, on a flag, an environment variable other than the
// one envName gives it: a flag whose name means something else in another
// command (playground's --pd is a count, every other --pd an address list)
// must not read that command's variable.
const envAnnotation = "basalt-env"

// envName is the environment variable of a flag.
func envName(flag string) string {
	return "BASALT_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// flagEnvName is f's environment variable.
func flagEnvName(f *pflag.Flag) string {
	if v := f.Annotations[envAnnotation]; len(v) == 1 {
		return v[0]
	}
	return envName(f.Name)
}

// applySettings sets every flag not given on the command line from the
// environment or the config file. A setting the command does not have, or
// a value its flag refuses, is an error naming where it came from.
func applySettings(fs *pflag.FlagSet, lookupEnv func(string) (string, bool)) error {
	file, _ := fs.GetString("config")
	if f := fs.Lookup("config"); file == "" && f != nil {
		file, _ = lookupEnv(flagEnvName(f))
	}
	fromFile := map[string]any{}
	if file != "" {
		var err error
		if fromFile, err = readSettings(file); err != nil {
			return err
		}
	}
	var unknown []string
	for name := range fromFile {
		if f := fs.Lookup(name); f == nil || name == "config" || name == "help" {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("config file %s: unknown setting(s) %s", file, strings.Join(unknown, ", "))
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "config" || f.Name == "help" {
			return
		}
		if v, ok := lookupEnv(flagEnvName(f)); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s=%q: %v", flagEnvName(f), v, serr)
			}
			return
		}
		if v, ok := fromFile[f.Name]; ok {
			s := settingString(v)
			if serr := fs.Set(f.Name, s); serr != nil {
				err = fmt.Errorf("config file %s: %s: %q: %v", file, f.Name, s, serr)
			}
		}
	})
	return err
}

// readSettings reads a flat YAML or TOML table of settings.
func readSettings(file string) (map[string]any, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	out := map[string]any{}
	switch strings.ToLower(filepath.Ext(file)) {
	case ".yaml", ".yml":
		err = yaml.Unmarshal(data, &out)
	case ".toml":
		err = toml.Unmarshal(data, &out)
	default:
		return nil, fmt.Errorf("config file %s: want a .yaml, .yml or .toml file", file)
	}
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", file, err)
	}
	return out, nil
}

// settingString is a file's value as its flag would read it: a list (of PD
// addresses, say) joins with commas and a table (of labels) becomes
// key=value pairs, as on the command line.
func settingString(v any) string {
	if m, ok := v.(map[string]any); ok {
		parts := make([]string, 0, len(m))
		for k, x := range m {
			parts = append(parts, k+"="+fmt.Sprint(x))
		}
		sort.Strings(parts)
		return strings.Join(parts, ",")
	}
	if list, ok := v.([]any); ok {
		parts := make([]string, len(list))
		for i, x := range list {
			parts[i] = fmt.Sprint(x)
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}
