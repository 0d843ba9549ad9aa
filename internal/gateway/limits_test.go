package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSlowlorisCutOff: a client that sends its headers a byte at a time is
// disconnected after ReadHeaderTimeout, long before it would finish.
func TestSlowlorisCutOff(t *testing.T) {
	t.Parallel()
	const timeout = 500 * time.Millisecond
	g := newGateway(t, func(o *Options) { o.ReadHeaderTimeout = timeout })
	for _, ep := range []string{"http", "https"} {
		addr := g.HTTPAddr().String()
		if ep == "https" {
			addr = g.HTTPSAddr().String() // the TLS handshake is bounded too
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		headers := "GET / HTTP/1.1\r\nHost: slow.example.test\r\nUser-Agent: slowloris\r\n\r\n" // ~60 s at 1 byte/s
		start := time.Now()
		cut := make(chan time.Duration, 1)
		go func() {
			io.Copy(io.Discard, c) // returns when the gateway closes the connection
			cut <- time.Since(start)
		}()
		tick := time.NewTicker(100 * time.Millisecond) // the attack's pace, not a wait for a condition
	send:
		for i := 0; i < len(headers); i++ {
			select {
			case took := <-cut:
				cut <- took
				break send
			case <-tick.C:
				if _, err := c.Write([]byte{headers[i]}); err != nil {
					break send
				}
			}
		}
		tick.Stop()
		select {
		case took := <-cut:
			if took < timeout-50*time.Millisecond || took > 4*timeout {
				t.Errorf("%s: slow client cut off after %s, want about %s", ep, took, timeout)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: slow client still connected after 10s", ep)
		}
	}
}

// TestMaxConns: connections over the entrypoint's limit are closed at once;
// a slot frees when a connection ends.
func TestMaxConns(t *testing.T) {
	t.Parallel()
	g := newGateway(t, func(o *Options) { o.MaxConns = 2 })
	a := httpBackend(t, "a")
	mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Path: "/", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}})
	addr := g.HTTPAddr().String()
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// Both held connections are accepted before the third arrives.
	eventually(t, 5*time.Second, "two connections to be accepted", func() bool { return g.http.ln.active.Load() == 2 })
	// The reset may reach the client during its connect, or after.
	if over, err := net.Dial("tcp", addr); err == nil {
		defer over.Close()
		over.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(over, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if n, err := over.Read(make([]byte, 1)); n != 0 || isTimeout(err) {
			t.Fatalf("a connection over the limit was served (read %d, %v)", n, err)
		}
	}
	if g.http.ln.rejected.Load() == 0 {
		t.Fatal("rejection not counted")
	}
	held[0].Close()
	eventually(t, 5*time.Second, "a slot to free", func() bool { return g.http.ln.active.Load() == 1 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after a slot freed: %v", err)
	}
	resp.Body.Close()
}

// TestMaxHeaderBytes: oversized headers get 431.
func TestMaxHeaderBytes(t *testing.T) {
	t.Parallel()
	g := newGateway(t, func(o *Options) { o.MaxHeaderBytes = 4096 })
	req, _ := http.NewRequest("GET", "http://"+g.HTTPAddr().String()+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
	resp, err := noRedirect().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
}
