package main

import "testing"

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
