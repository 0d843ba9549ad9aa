package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestCountsEveryFailureAndVersion runs the generator against a server that
// answers every fifth request with a 503, and checks that each of those is
// counted, that the others count under their version, and that Since tells
// the versions apart by time.
func TestCountsEveryFailureAndVersion(t *testing.T) {
	var n, served atomic.Int64
	var version atomic.Value
	version.Store("v1")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			t.Errorf("method %s, want POST (never replayed by the transport)", r.Method)
		}
		if n.Add(1)%5 == 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		served.Add(1)
		fmt.Fprintf(w, `{"version":%q}`, version.Load())
	}))
	defer srv.Close()

	g := New(Config{URL: srv.URL, KeepAlive: 2, NewConn: 2})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Stats)
	go func() { done <- g.Run(ctx) }()
	waitFor(t, func() bool { return g.Snapshot().Versions["v1"] != nil && g.Snapshot().Total > 200 })
	switched := time.Now()
	version.Store("v2")
	waitFor(t, func() bool {
		s := g.Snapshot()
		// A request must have started well after the switch: on a loaded
		// machine the generator can stall, and the clock alone says nothing
		// of what was sent.
		return s.Versions["v2"] != nil && s.Versions["v2"].Count > 200 && s.Versions["v2"].Last.After(switched.Add(150*time.Millisecond))
	})
	cancel()
	st := <-done

	if st.Total == 0 || st.Failed == 0 {
		t.Fatalf("no requests or no failures counted: %v", st)
	}
	ok := st.Versions["v1"].Count + st.Versions["v2"].Count
	if ok+st.Failed != st.Total {
		t.Errorf("%d ok + %d failed != %d total", ok, st.Failed, st.Total)
	}
	// The server may have answered requests the end of the run cut off;
	// every counted one was answered.
	if ok > served.Load() {
		t.Errorf("%d successes counted, server served only %d", ok, served.Load())
	}
	if st.ByError["status 503: busy"] != st.Failed {
		t.Errorf("failures by kind %v, want all %d as 503", st.ByError, st.Failed)
	}
	// A request started 100ms after the switch can only have seen v2 (the
	// switch is visible to every handler after it).
	if got := st.Since(switched.Add(100 * time.Millisecond)); len(got) != 1 || got[0] != "v2" {
		t.Errorf("versions after the switch: %v, want [v2]", got)
	}
	if len(st.Samples) == 0 || len(st.Samples) > 50 {
		t.Errorf("%d samples kept, want 1..50", len(st.Samples))
	}
	t.Log(st)
}

// TestConnectionErrorsCount points the generator at a port nothing listens
// on: every request is a failure, with the address taken out of its kind.
func TestConnectionErrorsCount(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	g := New(Config{URL: "http://" + addr + "/", NewConn: 1, KeepAlive: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Stats)
	go func() { done <- g.Run(ctx) }()
	waitFor(t, func() bool { return g.Snapshot().Failed >= 20 })
	cancel()
	st := <-done
	if st.Failed != st.Total || len(st.Versions) != 0 {
		t.Fatalf("want every request failed: %v", st)
	}
	for k := range st.ByError {
		if want := "ADDR"; !strings.Contains(k, want) || strings.Contains(k, addr) {
			t.Errorf("error kind %q should name ADDR, not %s", k, addr)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestErrorKind folds the addresses of an error out of its kind.
func TestErrorKind(t *testing.T) {
	for in, want := range map[string]string{
		`Post "http://127.0.0.1:80/": read tcp 127.0.0.1:33384->127.0.0.1:52455: read: connection reset by peer`: "Post URL read tcp ADDR->ADDR read: connection reset by peer",
		`Post "http://127.0.0.1:80/": dial tcp 127.0.0.1:52455: connect: connection refused`:                     "Post URL dial tcp ADDR connect: connection refused",
		`status 502: bad gateway`: "status 502: bad gateway",
	} {
		if got := errorKind(errors.New(in)); got != want {
			t.Errorf("errorKind(%q) = %q, want %q", in, got, want)
		}
	}
}
