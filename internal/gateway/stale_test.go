package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestStalePooledConnections checks requests on pooled backend connections
// the backend has closed in the meantime (an idle timeout): a replayable
// request (GET) takes the pooled connection without probing it and is sent
// again on a new one when it turns out closed; a request that cannot be
// replayed (POST) has the pooled connection probed first, so it is never
// lost to a close it could not see.
func TestStalePooledConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int64
	closed := make(chan struct{}, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				// One request, a keep-alive answer, then the backend
				// closes the connection as an idle timeout would.
				defer func() { c.Close(); closed <- struct{}{} }()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	g := newGateway(t, nil)
	mustUpdate(t, g, Config{Routes: []Route{{Service: "svc", Path: "/", Backends: []Backend{{ID: "a", Addr: ln.Addr().String()}}}}})
	url := "http://" + g.HTTPAddr().String() + "/"
	client := &http.Client{Timeout: 10 * time.Second}
	for i, method := range []string{"GET", "POST", "GET", "POST", "GET", "GET", "POST", "POST"} {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("payload")
		}
		req, _ := http.NewRequest(method, url, body)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d (%s): %v", i, method, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d (%s) over a pool the backend keeps closing: %d %q", i, method, resp.StatusCode, b)
		}
		select { // the backend has closed this request's connection
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("the backend did not close its connection")
		}
	}
	if n := conns.Load(); n != 8 {
		t.Errorf("the backend accepted %d connections for 8 requests, want 8 (one each)", n)
	}
}

// TestHalfClosedPooledConnection checks a pooled connection the backend has
// half-closed while it was idle (a lingering close: no more answers, but
// the backend still reads, and may for long). A connection idle for longer
// than awaitIdleMax is read at once after the request is sent, so the close
// is seen and the GET goes to a new connection; the request must not wait
// for the backend's full close.
func TestHalfClosedPooledConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int64
	halfClosed := make(chan struct{}, 10)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				c.(*net.TCPConn).CloseWrite()
				halfClosed <- struct{}{}
				go io.Copy(io.Discard, c) // keeps reading, never answers again
				<-stop
			}()
		}
	}()
	g := newGateway(t, nil)
	mustUpdate(t, g, Config{Routes: []Route{{Service: "svc", Path: "/", Backends: []Backend{{ID: "a", Addr: ln.Addr().String()}}}}})
	url := "http://" + g.HTTPAddr().String() + "/"
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(i int) {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	for i := 1; i <= 3; i++ {
		get(i)
		select {
		case <-halfClosed:
		case <-time.After(5 * time.Second):
			t.Fatal("the backend did not half-close its connection")
		}
		// The pooled connection has been idle longer than awaitIdleMax.
		g.mu.Lock()
		for _, s := range g.backends {
			s.pool.mu.Lock()
			for _, c := range s.pool.idle {
				c.idleAt = c.idleAt.Add(-2 * awaitIdleMax)
			}
			s.pool.mu.Unlock()
		}
		g.mu.Unlock()
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("the backend accepted %d connections for 3 requests, want 3", n)
	}
}
