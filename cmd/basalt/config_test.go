package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func settingsFlags(t *testing.T, args ...string) (*pflag.FlagSet, *string, *int, *time.Duration, *string) {
	t.Helper()
	fs := pflag.NewFlagSet("store", pflag.ContinueOnError)
	dir := fs.String("data-dir", "default-dir", "")
	n := fs.Int("max-keys", 7, "")
	d := fs.Duration("heartbeat-interval", time.Second, "")
	pd := fs.String("pd", "127.0.0.1:2379", "")
	fs.String("config", "", "")
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs, dir, n, d, pd
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// A flag beats the environment, which beats the file, which beats the
// default; YAML and TOML read alike.
func TestSettingsPrecedence(t *testing.T) {
	for _, file := range []string{
		writeFile(t, "s.yaml", "data-dir: from-file\nmax-keys: 42\nheartbeat-interval: 3s\npd: [a:1, b:2]\n"),
		writeFile(t, "s.toml", "data-dir = \"from-file\"\nmax-keys = 42\nheartbeat-interval = \"3s\"\npd = [\"a:1\", \"b:2\"]\n"),
	} {
		fs, dir, n, d, pd := settingsFlags(t, "--config", file, "--max-keys", "5")
		if err := applySettings(fs, env(map[string]string{"BASALT_HEARTBEAT_INTERVAL": "9s", "BASALT_MAX_KEYS": "6"})); err != nil {
			t.Fatal(err)
		}
		if *dir != "from-file" || *n != 5 || *d != 9*time.Second || *pd != "a:1,b:2" {
			t.Fatalf("%s: data-dir %q max-keys %d heartbeat %v pd %q", file, *dir, *n, *d, *pd)
		}
	}
	// BASALT_CONFIG names the file when --config does not.
	file := writeFile(t, "s.yml", "data-dir: via-env\n")
	fs, dir, _, _, _ := settingsFlags(t)
	if err := applySettings(fs, env(map[string]string{"BASALT_CONFIG": file})); err != nil || *dir != "via-env" {
		t.Fatalf("BASALT_CONFIG: %v, data-dir %q", err, *dir)
	}
	// Nothing set: the defaults stay.
	fs, dir, n, _, _ := settingsFlags(t)
	if err := applySettings(fs, env(nil)); err != nil || *dir != "default-dir" || *n != 7 {
		t.Fatalf("defaults: %v %q %d", err, *dir, *n)
	}
}

// Bad settings are refused with the name of where they came from, and set
// nothing the command then runs with.
func TestSettingsErrors(t *testing.T) {
	for _, c := range []struct {
		file, env, want string
	}{
		{file: "data-dir: x\nno-such-flag: 1\n", want: "unknown setting(s) no-such-flag"},
		{file: "max-keys: lots\n", want: "max-keys"},
		{file: "data-dir: [unclosed\n", want: "config file"},
		{env: "BASALT_HEARTBEAT_INTERVAL", want: "BASALT_HEARTBEAT_INTERVAL"},
	} {
		args := []string{}
		if c.file != "" {
			args = append(args, "--config", writeFile(t, "bad.yaml", c.file))
		}
		fs, _, _, _, _ := settingsFlags(t, args...)
		e := map[string]string{}
		if c.env != "" {
			e[c.env] = "soon"
		}
		err := applySettings(fs, env(e))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%+v: got %v, want an error naming %q", c, err, c.want)
		}
	}
	fs, _, _, _, _ := settingsFlags(t, "--config", writeFile(t, "s.json", "{}"))
	if err := applySettings(fs, env(nil)); err == nil || !strings.Contains(err.Error(), ".toml") {
		t.Fatalf("a .json file: %v", err)
	}
}

// playground's --pd is a count, every other --pd an address list: it reads
// BASALT_PLAYGROUND_PD, so a BASALT_PD exported for ctl and the stores does
// not break it.
func TestPlaygroundPDHasItsOwnVariable(t *testing.T) {
	cmd := playgroundCmd()
	fs := cmd.Flags()
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := applySettings(fs, env(map[string]string{"BASALT_PD": "127.0.0.1:2379", "BASALT_PLAYGROUND_PD": "3", "BASALT_STORES": "4"})); err != nil {
		t.Fatal(err)
	}
	if got, _ := fs.GetInt("pd"); got != 3 {
		t.Fatalf("--pd is %d, want 3 from BASALT_PLAYGROUND_PD", got)
	}
	if got, _ := fs.GetInt("stores"); got != 4 {
		t.Fatalf("--stores is %d, want 4 from BASALT_STORES", got)
	}
	if !strings.Contains(fs.Lookup("pd").Usage, "BASALT_PLAYGROUND_PD") {
		t.Fatalf("--pd's help does not name its variable: %q", fs.Lookup("pd").Usage)
	}
}

// The table printer pads every cell to its column and borders the table.
func TestTableOutput(t *testing.T) {
	tb := newTable("KEY", "VALUE")
	tb.add("a", 1)
	tb.add("longer-key", "ü")
	var b strings.Builder
	if err := tb.write(&b); err != nil {
		t.Fatal(err)
	}
	want := `+------------+-------+
| KEY        | VALUE |
+------------+-------+
| a          | 1     |
| longer-key | ü     |
+------------+-------+
`
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}
