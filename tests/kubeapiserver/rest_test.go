package kubeapiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// A small REST client for the few objects the test touches: plain
// net/http and encoding/json, no Kubernetes modules.

type objectMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	UID               string            `json:"uid,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	DeletionTimestamp *string           `json:"deletionTimestamp,omitempty"`
}

// object is any namespaced object the test writes: its kind, metadata and
// (for ConfigMaps) data.
type object struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   objectMeta        `json:"metadata"`
	Data       map[string]string `json:"data,omitempty"`
}

type listMeta struct {
	ResourceVersion    string `json:"resourceVersion"`
	Continue           string `json:"continue"`
	RemainingItemCount *int64 `json:"remainingItemCount"`
}

type objectList struct {
	Metadata listMeta `json:"metadata"`
	Items    []object `json:"items"`
}

// status is the API's error body.
type status struct {
	Kind     string   `json:"kind"`
	Status   string   `json:"status"`
	Reason   string   `json:"reason"`
	Message  string   `json:"message"`
	Code     int      `json:"code"`
	Metadata listMeta `json:"metadata"`
}

type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// request sends one request and returns the status code and body.
func (a *apiServer) request(method, path, contentType string, body any) (int, []byte, error) {
	ctx, cancel := a.ctx()
	defer cancel()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, r)
	if err != nil {
		return 0, nil, err
	}
	if contentType == "" && body != nil {
		contentType = "application/json"
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// must sends a request that must answer want, and decodes the body into
// out (if not nil).
func (a *apiServer) must(want int, method, path, contentType string, body, out any) {
	a.t.Helper()
	code, b, err := a.request(method, path, contentType, body)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	if code != want {
		a.t.Fatalf("%s %s: %d %s, want %d", method, path, code, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			a.t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
}

// fails sends a request that must fail with code and reason, and returns
// the Status.
func (a *apiServer) fails(code int, reason, method, path, contentType string, body any) status {
	a.t.Helper()
	var st status
	a.must(code, method, path, contentType, body, &st)
	if st.Kind != "Status" || st.Reason != reason || st.Code != code {
		a.t.Fatalf("%s %s: %+v, want a Status with reason %s and code %d", method, path, st, reason, code)
	}
	return st
}

// watch opens a watch and returns its events as they arrive; it ends when
// the test does.
func (a *apiServer) watch(t *testing.T, path string) <-chan watchEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		t.Fatalf("watch %s: %v", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("watch %s: %d %s", path, resp.StatusCode, b)
	}
	ch := make(chan watchEvent, 100)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		for {
			var e watchEvent
			if dec.Decode(&e) != nil {
				return
			}
			ch <- e
		}
	}()
	return ch
}

// next returns a watch's next event, failing the test if none comes in
// time or the watch ended.
func next(t *testing.T, ch <-chan watchEvent, what string) (watchEvent, object) {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatalf("%s: the watch ended", what)
		}
		var o object
		if err := json.Unmarshal(e.Object, &o); err != nil {
			t.Fatalf("%s: decoding %s: %v", what, e.Object, err)
		}
		return e, o
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no event in 30 s", what)
	}
	return watchEvent{}, object{}
}

// rv parses a resourceVersion (Basalt's revisions, as etcd's, are
// numbers; clients must treat them as opaque, the test compares them).
func rv(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		t.Fatalf("resourceVersion %q: %v", s, err)
	}
	return n
}

func cmName(i int) string { return fmt.Sprintf("cm-%03d", i) }
