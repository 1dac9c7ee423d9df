package storenode

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
)

func TestEtcdListenURL(t *testing.T) {
	for _, tc := range []struct {
		url   string
		tlsOn bool
		host  string
		says  string
	}{
		{"https://127.0.0.1:2379", true, "127.0.0.1:2379", ""},
		{"http://0.0.0.0:0", false, "0.0.0.0:0", ""},
		{"https://[::1]:2379/", true, "[::1]:2379", ""},
		{"https://127.0.0.1:2379", false, "", "no certificate"},
		{"http://127.0.0.1:2379", true, "", "use https"},
		{"unix://x:1", false, "", "scheme"},
		{"127.0.0.1:2379", false, "", "want http://host:port"},
		{"https://127.0.0.1", true, "", "missing port"},
		{"https://127.0.0.1:2379/v3", true, "", "want http://host:port"},
	} {
		host, err := etcdListenHost(tc.url, tc.tlsOn)
		if tc.says == "" {
			if err != nil || host != tc.host {
				t.Errorf("etcdListenHost(%q, %v) = %q, %v; want %q", tc.url, tc.tlsOn, host, err, tc.host)
			}
			continue
		}
		if !errors.Is(err, ErrEtcdURL) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("etcdListenHost(%q, %v): %v, want ErrEtcdURL saying %q", tc.url, tc.tlsOn, err, tc.says)
		}
	}
}

// TLS settings or advertised URLs without a listener would be silently
// unused: the store refuses them, before it listens on anything.
func TestEtcdSettingsNeedAListener(t *testing.T) {
	for _, cfg := range []Config{
		{EtcdTLS: &tls.Config{}},
		{EtcdAdvertiseURLs: []string{"https://store1:2379"}},
		{EtcdListenURL: "https://127.0.0.1:0", EtcdTLS: &tls.Config{}, EtcdAdvertiseURLs: []string{"http://store1:2379"}},
	} {
		s := &Server{cfg: cfg}
		if err := s.listenEtcd(); !errors.Is(err, ErrEtcdURL) {
			t.Errorf("%+v: %v, want ErrEtcdURL", cfg, err)
		}
		if s.etcdLis != nil {
			s.etcdLis.Close()
			t.Errorf("%+v: listened", cfg)
		}
	}
}
