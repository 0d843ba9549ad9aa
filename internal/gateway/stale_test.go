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
