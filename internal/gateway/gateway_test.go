package gateway

import (
	"testing"
	"time"
)

// TestUpdateWaitsForPickers: Update does not return while a goroutine may
// still pick a backend from the table it replaced, so that after Update
// InFlight accounts for every request a removed backend will ever get.
func TestUpdateWaitsForPickers(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	mustUpdate(t, g, Config{Routes: []Route{{Service: "svc", Path: "/", Backends: []Backend{{ID: "a", Addr: "127.0.0.1:9"}}}}})

	tbl := g.acquire() // a request between routing and picking
	done := make(chan error, 1)
	go func() { done <- g.Update(Config{}) }()
	select {
	case err := <-done:
		t.Fatalf("Update returned (%v) while a request could still pick from the old table", err)
	case <-time.After(100 * time.Millisecond): // proving a negative: nothing to poll
	}
	b := tbl.router.match("x", "/").pool.pick(g.now, nil)
	tbl.release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := g.InFlight("a"); b == nil || n != 1 {
		t.Fatalf("InFlight(a) = %d after a late pick, want 1", n)
	}
	b.inflight.Add(-1)

	// A table acquired after the swap is the new one.
	if tbl := g.acquire(); tbl.router.match("x", "/") != nil {
		t.Fatal("new requests still see the removed route")
	} else {
		tbl.release()
	}
}

// TestDrainWaitsForPickers: the same guarantee for Drain.
func TestDrainWaitsForPickers(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	mustUpdate(t, g, Config{Routes: []Route{{Service: "svc", Path: "/", Backends: []Backend{{ID: "a", Addr: "127.0.0.1:9"}}}}})
	tbl := g.acquire()
	done := make(chan bool, 1)
	go func() { done <- g.Drain("a") }()
	select {
	case <-done:
		t.Fatal("Drain returned while a request could still pick the backend")
	case <-time.After(100 * time.Millisecond):
	}
	tbl.release()
	if !<-done {
		t.Fatal("Drain(a) = false")
	}
	tbl = g.acquire()
	defer tbl.release()
	if b := tbl.router.match("x", "/").pool.pick(g.now, nil); b != nil {
		t.Fatal("a drained backend was picked")
	}
}

// TestCloseIsFinal: Update after Close fails; Close twice is fine.
func TestCloseIsFinal(t *testing.T) {
	t.Parallel()
	g, err := New(Options{HTTPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Update(Config{}); err != ErrClosed {
		t.Fatalf("Update after Close: %v", err)
	}
}
