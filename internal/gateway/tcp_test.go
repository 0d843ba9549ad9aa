package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPublishedTCPSpreadAndFailover: three backends behind a published
// port get a share each; when one dies, it is ejected and not one request
// fails, because a refused connection is retried on another backend.
func TestPublishedTCPSpreadAndFailover(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	g := newGateway(t, func(o *Options) { o.Now = clock.Now })
	bs := []*tcpBackend{startTCPBackend(t, "b0"), startTCPBackend(t, "b1"), startTCPBackend(t, "b2")}
	port := freePort(t, "tcp")
	cfg := Config{Published: []Published{{Service: "echo", Port: port, Backends: []Backend{
		{ID: "b0", Addr: bs[0].addr()}, {ID: "b1", Addr: bs[1].addr()}, {ID: "b2", Addr: bs[2].addr()}}}}}
	mustUpdate(t, g, cfg)
	addr := "127.0.0.1:" + strconv.Itoa(port)

	count := map[string]int{}
	for i := 0; i < 30; i++ {
		ans, err := tcpAsk(addr, "ping")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		name, _, _ := strings.Cut(ans, ":")
		count[name]++
	}
	for _, b := range bs {
		if count[b.name] != 10 {
			t.Errorf("%s answered %d of 30, want 10 (round robin): %v", b.name, count[b.name], count)
		}
	}

	// Kill b1: its port refuses connections.
	deadAddr := bs[1].addr()
	bs[1].stop()
	const n = 300
	failed := 0
	count = map[string]int{}
	for i := 0; i < n; i++ {
		ans, err := tcpAsk(addr, "ping")
		if err != nil {
			failed++
			t.Logf("request %d: %v", i, err)
			continue
		}
		name, _, _ := strings.Cut(ans, ":")
		count[name]++
	}
	if failed != 0 {
		t.Fatalf("%d of %d requests failed after a backend died", failed, n)
	}
	if count["b1"] != 0 || count["b0"] == 0 || count["b2"] == 0 {
		t.Fatalf("answers after b1 died: %v", count)
	}
	// b1 was tried once, then ejected: with 300 requests and round robin it
	// would otherwise have been tried 100 times.
	st := g.backendState("b1")
	if st == nil || st.ejectedUntil.Load() <= clock.Now().UnixNano() {
		t.Fatal("b1 is not ejected")
	}

	// b1 comes back on the same address; after its cool-off it gets traffic
	// again.
	ln, err := net.Listen("tcp", deadAddr)
	if err != nil {
		t.Skipf("cannot listen on %s again to revive b1: %v", deadAddr, err)
	}
	serveTCPBackend(t, "b1", ln)
	clock.Advance(DefaultEjectMin + time.Millisecond)
	count = map[string]int{}
	for i := 0; i < 30; i++ {
		ans, err := tcpAsk(addr, "ping")
		if err != nil {
			t.Fatalf("request %d after revival: %v", i, err)
		}
		name, _, _ := strings.Cut(ans, ":")
		count[name]++
	}
	if count["b1"] == 0 {
		t.Fatalf("revived b1 got no traffic: %v", count)
	}
}

// TestPublishedTCPDrain: a connection open to a backend that Update removes
// keeps working; new connections go elsewhere; InFlight goes 1 → 0 when the
// client closes.
func TestPublishedTCPDrain(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	a, b := startTCPBackend(t, "a"), startTCPBackend(t, "b")
	port := freePort(t, "tcp")
	addr := "127.0.0.1:" + strconv.Itoa(port)
	mustUpdate(t, g, Config{Published: []Published{{Service: "echo", Port: port, Backends: []Backend{{ID: "a", Addr: a.addr()}}}}})

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	ask := func(line string) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "%s\n", line)
		ans, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("open connection: %v", err)
		}
		return strings.TrimSpace(ans)
	}
	if got := ask("one"); got != "a:one" {
		t.Fatalf("got %q", got)
	}
	if n := g.InFlight("a"); n != 1 {
		t.Fatalf("InFlight(a) = %d, want 1", n)
	}

	mustUpdate(t, g, Config{Published: []Published{{Service: "echo", Port: port, Backends: []Backend{{ID: "b", Addr: b.addr()}}}}})
	for i := 0; i < 5; i++ {
		if ans, err := tcpAsk(addr, "new"); err != nil || ans != "b:new" {
			t.Fatalf("new connection after removal: %q, %v", ans, err)
		}
	}
	if got := ask("two"); got != "a:two" {
		t.Fatalf("open connection after its backend was removed: %q", got)
	}
	if n := g.InFlight("a"); n != 1 {
		t.Fatalf("InFlight(a) = %d while its connection is open, want 1", n)
	}
	c.Close()
	eventually(t, 5*time.Second, "InFlight(a) to drop to 0", func() bool { return g.InFlight("a") == 0 })
}

// TestPublishedTCPDrainTimeout: a connection outliving DrainTimeout is cut.
func TestPublishedTCPDrainTimeout(t *testing.T) {
	t.Parallel()
	g := newGateway(t, func(o *Options) { o.DrainTimeout = 200 * time.Millisecond })
	a := startTCPBackend(t, "a")
	port := freePort(t, "tcp")
	mustUpdate(t, g, Config{Published: []Published{{Service: "echo", Port: port, Backends: []Backend{{ID: "a", Addr: a.addr()}}}}})
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "x\n")
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	mustUpdate(t, g, Config{})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(r) // EOF or a reset, not the 5 s deadline
	if ne, ok := err.(net.Error); (ok && ne.Timeout()) || time.Since(start) > 3*time.Second {
		took := time.Since(start)
		t.Fatalf("connection not cut at the drain timeout: err %v after %s", err, took)
	}
	eventually(t, 5*time.Second, "InFlight(a) to drop to 0", func() bool { return g.InFlight("a") == 0 })
}

// TestPublishedTCPNoBackend: a published port without backends closes
// connections at once rather than hanging.
func TestPublishedTCPNoBackend(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	port := freePort(t, "tcp")
	mustUpdate(t, g, Config{Published: []Published{{Service: "empty", Port: port}}})
	_, err := tcpAsk("127.0.0.1:"+strconv.Itoa(port), "x")
	if err == nil {
		t.Fatal("a port without backends answered")
	}
}

// backendState returns the state of backend id, for tests.
func (g *Gateway) backendState(id string) *backendState {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.backends {
		if s.ID == id {
			return s
		}
	}
	return nil
}
