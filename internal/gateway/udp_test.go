package gateway

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// udpBackend answers each datagram with "name:" + datagram.
func udpBackend(t *testing.T, name string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(name+":"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().String()
}

func udpAsk(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(buf[:n])
}

// TestPublishedUDP: datagrams are echoed through the gateway; one client
// address sticks to one backend (a session); different clients spread; the
// session ends after UDPIdleTimeout.
func TestPublishedUDP(t *testing.T) {
	t.Parallel()
	g := newGateway(t, func(o *Options) { o.UDPIdleTimeout = 300 * time.Millisecond })
	a, b := udpBackend(t, "a"), udpBackend(t, "b")
	port := freePort(t, "udp")
	mustUpdate(t, g, Config{Published: []Published{{Service: "dns", Port: port, Protocol: "udp",
		Backends: []Backend{{ID: "a", Addr: a}, {ID: "b", Addr: b}}}}})
	addr := "127.0.0.1:" + strconv.Itoa(port)

	seen := map[string]int{}
	for i := 0; i < 4; i++ {
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		first := udpAsk(t, c, "hello")
		name, rest, _ := strings.Cut(first, ":")
		if rest != "hello" {
			t.Fatalf("echo %q", first)
		}
		for j := 0; j < 3; j++ {
			if got := udpAsk(t, c, "again"); got != name+":again" {
				t.Fatalf("client %d switched backend within its session: %q then %q", i, first, got)
			}
		}
		seen[name]++
		c.Close()
	}
	if seen["a"] != 2 || seen["b"] != 2 {
		t.Fatalf("4 clients over 2 backends: %v, want 2 each", seen)
	}
	eventually(t, 5*time.Second, "idle UDP sessions to end", func() bool {
		return g.InFlight("a") == 0 && g.InFlight("b") == 0
	})
}
