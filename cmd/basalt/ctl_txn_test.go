package main

import (
	"strings"
	"testing"

	"github.com/basaltdb/basalt/proto/kvpb"
)

func TestParseTxnEtcdctlSyntax(t *testing.T) {
	in := `mod("key1") > "0"
value("key 2") = "a \"quoted\" value"

put key1 "overwrote-key1" --lease=0x10
get k --prefix --limit=3

del key2 key3
`
	req, err := parseTxn(strings.NewReader(in), func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	if len(req.GetCompare()) != 2 || len(req.GetSuccess()) != 2 || len(req.GetFailure()) != 1 {
		t.Fatalf("parts: %v", req)
	}
	c0, c1 := req.GetCompare()[0], req.GetCompare()[1]
	if c0.GetTarget() != kvpb.Compare_MOD || c0.GetResult() != kvpb.Compare_GREATER || c0.GetModRevision() != 0 || string(c0.GetKey()) != "key1" {
		t.Fatalf("compare 0: %v", c0)
	}
	if c1.GetTarget() != kvpb.Compare_VALUE || string(c1.GetKey()) != "key 2" || string(c1.GetValue()) != `a "quoted" value` {
		t.Fatalf("compare 1: %v", c1)
	}
	put := req.GetSuccess()[0].GetRequestPut()
	if string(put.GetKey()) != "key1" || string(put.GetValue()) != "overwrote-key1" || put.GetLease() != 16 {
		t.Fatalf("put: %v", put)
	}
	get := req.GetSuccess()[1].GetRequestRange()
	if string(get.GetRangeEnd()) != "l" || get.GetLimit() != 3 {
		t.Fatalf("get: %v", get)
	}
	del := req.GetFailure()[0].GetRequestDeleteRange()
	if string(del.GetKey()) != "key2" || string(del.GetRangeEnd()) != "key3" {
		t.Fatalf("del: %v", del)
	}
}

func TestParseTxnRejectsBadInput(t *testing.T) {
	for _, in := range []string{
		`modx("k") > "0"`,
		`mod("k") >= "0"`,
		`version("k") = "x"`,
		`value("k") =`,
		"\nfrob k v",
		"\nput k",
		"\nget k --limit=x",
		"\nput k v --frob",
		"\nput k \"unterminated",
		"",
	} {
		if _, err := parseTxn(strings.NewReader(in), func(string) {}); err == nil {
			t.Errorf("accepted %q", in)
		}
	}
}
