package main

import (
	"maps"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"96MiB": 96 << 20, "1KiB": 1024, "512": 512, "2GB": 2 << 30, "10 MB": 10 << 20, "7B": 7} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Fatalf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1MiB", "0", "1.5MiB", "12XB", "99999999999GiB"} {
		if _, err := parseSize(bad); err == nil {
			t.Fatalf("parseSize(%q) accepted", bad)
		}
	}
}

func TestParsePeerAddrMap(t *testing.T) {
	for in, want := range map[string]map[string]string{
		"":                              {},
		"10.0.0.5:20160=127.0.0.1:3001": {"10.0.0.5:20160": "127.0.0.1:3001"},
		" a:1 = b:2 , c:3=d:4 ":         {"a:1": "b:2", "c:3": "d:4"},
		"a:1=b:2,a:1=b:2":               {"a:1": "b:2"},
		"store2.example:20160=[::1]:9":  {"store2.example:20160": "[::1]:9"},
	} {
		got, err := parsePeerAddrMap(in)
		if err != nil || !maps.Equal(got, want) {
			t.Fatalf("parsePeerAddrMap(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for bad, says := range map[string]string{
		"a:1":              "FROM=TO",
		"a:1=":             "FROM=TO",
		"=b:2":             "FROM=TO",
		"a:1=b:2,":         "FROM=TO",
		"a:1=b:2,,c:3=d:4": "FROM=TO",
		"a=b:2":            "not a host:port",
		"a:1=b":            "not a host:port",
		":1=b:2":           "not a host:port",
		"a:1=b:2,a:1=c:3":  "mapped twice",
	} {
		if _, err := parsePeerAddrMap(bad); err == nil || !strings.Contains(err.Error(), says) {
			t.Fatalf("parsePeerAddrMap(%q): %v, want an error saying %q", bad, err, says)
		}
	}
}

// --peer-addr-map comes from the environment and a config file's table as
// the other settings do, and a bad value stops the store before it starts.
func TestPeerAddrMapSettings(t *testing.T) {
	flag := func(t *testing.T, file string, environ map[string]string) string {
		t.Helper()
		cmd := storeCmd()
		if file != "" {
			if err := cmd.Flags().Set("config", file); err != nil {
				t.Fatal(err)
			}
		}
		if err := applySettings(cmd.Flags(), env(environ)); err != nil {
			t.Fatal(err)
		}
		v, _ := cmd.Flags().GetString("peer-addr-map")
		return v
	}
	want := map[string]string{"10.0.0.5:20160": "127.0.0.1:3001", "10.0.0.6:20160": "127.0.0.1:3002"}
	for _, src := range []struct {
		file string
		env  map[string]string
	}{
		{writeFile(t, "s.yaml", "peer-addr-map: {\"10.0.0.5:20160\": \"127.0.0.1:3001\", \"10.0.0.6:20160\": \"127.0.0.1:3002\"}\n"), nil},
		{writeFile(t, "s.toml", "peer-addr-map = [\"10.0.0.5:20160=127.0.0.1:3001\", \"10.0.0.6:20160=127.0.0.1:3002\"]\n"), nil},
		{"", map[string]string{"BASALT_PEER_ADDR_MAP": "10.0.0.5:20160=127.0.0.1:3001,10.0.0.6:20160=127.0.0.1:3002"}},
	} {
		v := flag(t, src.file, src.env)
		if got, err := parsePeerAddrMap(v); err != nil || !maps.Equal(got, want) {
			t.Fatalf("%s %v: %q parses to %v, %v", src.file, src.env, v, got, err)
		}
	}

	cmd := storeCmd()
	cmd.SetArgs([]string{"--peer-addr-map", "10.0.0.5:20160", "--data-dir", t.TempDir(), "--pd", "127.0.0.1:1"})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "--peer-addr-map") || !strings.Contains(err.Error(), "FROM=TO") {
		t.Fatalf("a pair without '=': %v", err)
	}
}

func TestParseLimits(t *testing.T) {
	l, err := parseLimits("1KiB", "64KiB", 4)
	if err != nil || l.MaxKeyBytes != 1024 || l.MaxRequestBytes != 64<<10 || l.MaxTxnOps != 4 {
		t.Fatalf("parseLimits: %+v %v", l, err)
	}
	for _, bad := range []struct {
		key, req string
		ops      int
	}{
		{"0", "64KiB", 4}, {"1KiB", "0", 4}, {"1KiB", "8MiB", 4}, {"64KiB", "64KiB", 4}, {"1KiB", "64KiB", 0}, {"lots", "64KiB", 4},
	} {
		if _, err := parseLimits(bad.key, bad.req, bad.ops); err == nil {
			t.Errorf("parseLimits(%q, %q, %d) accepted", bad.key, bad.req, bad.ops)
		}
	}
}

func TestParseEngineSizes(t *testing.T) {
	eo, err := parseEngineSizes("128MiB", "32MiB")
	if err != nil || eo.CacheBytes != 128<<20 || eo.MemTableBytes != 32<<20 {
		t.Fatalf("parseEngineSizes: %+v %v", eo, err)
	}
	for _, bad := range [][2]string{{"512KiB", "32MiB"}, {"128MiB", "512KiB"}, {"128MiB", "4GiB"}, {"lots", "32MiB"}, {"128MiB", "-1MiB"}} {
		if _, err := parseEngineSizes(bad[0], bad[1]); err == nil {
			t.Errorf("parseEngineSizes(%q, %q) accepted", bad[0], bad[1])
		}
	}
}
