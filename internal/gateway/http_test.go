package gateway

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHTTPRoutes sends requests through the HTTP entrypoint and checks which
// backend answers and what path it sees.
func TestHTTPRoutes(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	be := func(name string) []Backend {
		return []Backend{{ID: name, Addr: hostPort(httpBackend(t, name))}}
	}
	mustUpdate(t, g, Config{Routes: []Route{
		{Service: "shop", Host: "shop.example.test", Path: "/", Backends: be("shop")},
		{Service: "orders", Host: "shop.example.test", Path: "/orders", StripPrefix: true, Backends: be("orders")},
		{Service: "orders-v2", Host: "shop.example.test", Path: "/orders/v2", Backends: be("orders-v2")},
		{Service: "tenants", Host: "*.example.test", Path: "/", Backends: be("tenants")},
		{Service: "health", Path: "/healthz", Backends: be("health")},
	}})
	url := "http://" + g.HTTPAddr().String()
	c := noRedirect()
	cases := []struct {
		host, path string
		status     int
		backend    string
		seenPath   string
	}{
		{"shop.example.test", "/", 200, "shop", "/"},
		{"shop.example.test", "/cart?x=1", 200, "shop", "/cart"},
		{"SHOP.example.test:80", "/cart", 200, "shop", "/cart"},
		{"shop.example.test", "/orders", 200, "orders", "/"},
		{"shop.example.test", "/orders/42", 200, "orders", "/42"},
		{"shop.example.test", "/ordersx", 200, "shop", "/ordersx"},
		{"shop.example.test", "/orders/v2/7", 200, "orders-v2", "/orders/v2/7"},
		{"acme.example.test", "/anything", 200, "tenants", "/anything"},
		{"a.b.example.test", "/", 404, "", ""},
		{"unknown.test", "/", 404, "", ""},
		{"unknown.test", "/healthz", 200, "health", "/healthz"},
	}
	for _, tc := range cases {
		code, e, hdr := get(t, c, url+tc.path, tc.host)
		if code != tc.status || e.Name != tc.backend || (tc.backend != "" && e.Path != tc.seenPath) {
			t.Errorf("%s%s: %d from %q seeing %q, want %d from %q seeing %q",
				tc.host, tc.path, code, e.Name, e.Path, tc.status, tc.backend, tc.seenPath)
		}
		if code == 404 && (!strings.Contains(e.Body, "no route") || hdr.Get("X-Request-Id") == "") {
			t.Errorf("%s%s: 404 page %q, request id %q", tc.host, tc.path, e.Body, hdr.Get("X-Request-Id"))
		}
	}
	// The query survives.
	if _, e, _ := get(t, c, url+"/orders/1?q=a%20b", "shop.example.test"); e.Query != "q=a%20b" {
		t.Errorf("query %q", e.Query)
	}
}

// TestHTTPEmptyConfigAnswers404 makes sure an unknown host gets a page, not
// a hang, even before the first Update.
func TestHTTPEmptyConfigAnswers404(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	if code, _, _ := get(t, noRedirect(), "http://"+g.HTTPAddr().String()+"/", "nothing.test"); code != 404 {
		t.Fatalf("status %d, want 404", code)
	}
}

// TestHTTPNoBackend: a route whose service has no healthy task answers 503.
func TestHTTPNoBackend(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	mustUpdate(t, g, Config{Routes: []Route{{Service: "down", Path: "/"}}})
	if code, _, _ := get(t, noRedirect(), "http://"+g.HTTPAddr().String()+"/", "x.test"); code != 503 {
		t.Fatalf("status %d, want 503", code)
	}
}

func TestHTTPForwardedHeadersAndRequestID(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	a := httpBackend(t, "a")
	mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Host: "app.example.test", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}})
	url := "http://" + g.HTTPAddr().String() + "/x"
	c := noRedirect()

	code, e, hdr := get(t, c, url, "app.example.test:8080", "X-Forwarded-For", "6.6.6.6", "X-Forwarded-Proto", "https")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	h := e.Header
	if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want 127.0.0.1 (the client's claim is not trusted)", got)
	}
	if got := h.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("X-Forwarded-Proto %q, want http", got)
	}
	if got := h.Get("X-Forwarded-Host"); got != "app.example.test:8080" {
		t.Errorf("X-Forwarded-Host %q", got)
	}
	if e.Host != "app.example.test:8080" {
		t.Errorf("backend saw Host %q, want the client's", e.Host)
	}
	id := h.Get("X-Request-Id")
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
		t.Errorf("generated request id %q", id)
	}
	if hdr.Get("X-Request-Id") != id {
		t.Errorf("response request id %q, backend saw %q", hdr.Get("X-Request-Id"), id)
	}
	_, e2, _ := get(t, c, url, "app.example.test")
	if e2.Header.Get("X-Request-Id") == id {
		t.Error("two requests got the same id")
	}
	// A request id from the client is kept.
	_, e3, hdr3 := get(t, c, url, "app.example.test", "X-Request-Id", "abc-123")
	if e3.Header.Get("X-Request-Id") != "abc-123" || hdr3.Get("X-Request-Id") != "abc-123" {
		t.Errorf("client request id not kept: backend %q, response %q", e3.Header.Get("X-Request-Id"), hdr3.Get("X-Request-Id"))
	}
}

// TestHTTPRetryOnRefused: a dead backend among live ones costs no failed
// request, even for a POST with a body.
func TestHTTPRetryOnRefused(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	g := newGateway(t, func(o *Options) { o.Now = clock.Now })
	a, b := httpBackend(t, "a"), httpBackend(t, "b")
	dead := httptest.NewServer(http.NotFoundHandler())
	deadAddr := hostPort(dead)
	dead.Close()
	mustUpdate(t, g, Config{Routes: []Route{{Service: "svc", Path: "/", Backends: []Backend{
		{ID: "a", Addr: hostPort(a)}, {ID: "dead", Addr: deadAddr}, {ID: "b", Addr: hostPort(b)}}}}})
	url := "http://" + g.HTTPAddr().String() + "/post"
	c := noRedirect()
	count := map[string]int{}
	for i := 0; i < 60; i++ {
		body := fmt.Sprintf("payload-%d", i)
		resp, err := c.Post(url, "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		var e echoed
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 200 || e.Body != body {
			t.Fatalf("request %d: status %d, backend got body %q", i, resp.StatusCode, e.Body)
		}
		count[e.Name]++
	}
	if count["a"]+count["b"] != 60 {
		t.Fatalf("answers %v", count)
	}
	if st := g.backendState("dead"); st.ejectedUntil.Load() <= clock.Now().UnixNano() {
		t.Fatal("the dead backend is not ejected")
	}
	// The last response may reach the client a moment before the gateway
	// counts its request done.
	eventually(t, 2*time.Second, "nothing in flight", func() bool {
		return g.InFlight("dead")+g.InFlight("a")+g.InFlight("b") == 0
	})
}

// TestHTTPAllBackendsDown: 502, not a hang.
func TestHTTPAllBackendsDown(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadAddr := hostPort(dead)
	dead.Close()
	mustUpdate(t, g, Config{Routes: []Route{{Service: "svc", Path: "/", Backends: []Backend{{ID: "dead", Addr: deadAddr}}}}})
	if code, _, _ := get(t, noRedirect(), "http://"+g.HTTPAddr().String()+"/", "x"); code != 502 {
		t.Fatalf("status %d, want 502", code)
	}
}

// TestHTTPRouteTimeout: a slow backend gets 504 after the route's timeout.
func TestHTTPRouteTimeout(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	a := httpBackend(t, "a")
	mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Path: "/", Timeout: 200 * time.Millisecond,
		Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}})
	url := "http://" + g.HTTPAddr().String()
	start := time.Now()
	code, _, _ := get(t, noRedirect(), url+"/sleep?ms=5000", "x")
	if took := time.Since(start); code != 504 || took > 3*time.Second {
		t.Fatalf("status %d after %s, want 504 after about 200ms", code, took)
	}
	if code, _, _ := get(t, noRedirect(), url+"/sleep?ms=10", "x"); code != 200 {
		t.Fatalf("fast request: %d", code)
	}
	eventually(t, 5*time.Second, "InFlight(a) to drop to 0", func() bool { return g.InFlight("a") == 0 })
}

// TestHTTPDrain: a long request (the backend sleeps 1 s) completes after
// Update removed its backend; InFlight goes 1 → 0; new requests go to the
// other backend meanwhile.
func TestHTTPDrain(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	a, b := httpBackend(t, "a"), httpBackend(t, "b")
	both := []Backend{{ID: "a", Addr: hostPort(a)}, {ID: "b", Addr: hostPort(b)}}
	mustUpdate(t, g, Config{Routes: []Route{{Service: "svc", Path: "/", Backends: both[:1]}}})
	url := "http://" + g.HTTPAddr().String()
	c := noRedirect()

	type result struct {
		code int
		name string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Get(url + "/sleep?ms=1000")
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		var e echoed
		err = json.NewDecoder(resp.Body).Decode(&e)
		done <- result{resp.StatusCode, e.Name, err}
	}()
	eventually(t, 5*time.Second, "the long request to be in flight", func() bool { return g.InFlight("a") == 1 })

	mustUpdate(t, g, Config{Routes: []Route{{Service: "svc", Path: "/", Backends: both[1:]}}})
	for i := 0; i < 5; i++ {
		if code, e, _ := get(t, c, url+"/", "x"); code != 200 || e.Name != "b" {
			t.Fatalf("new request after removal went to %q (%d), want b", e.Name, code)
		}
	}
	if n := g.InFlight("a"); n != 1 {
		t.Fatalf("InFlight(a) = %d during the long request, want 1", n)
	}
	r := <-done
	if r.err != nil || r.code != 200 || r.name != "a" {
		t.Fatalf("long request: %d from %q, %v; want 200 from a", r.code, r.name, r.err)
	}
	eventually(t, 2*time.Second, "InFlight(a) to drop to 0", func() bool { return g.InFlight("a") == 0 })
}

// TestHTTPDrainCall: Drain takes a backend out without a new config.
func TestHTTPDrainCall(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	a, b := httpBackend(t, "a"), httpBackend(t, "b")
	cfg := Config{Routes: []Route{{Service: "svc", Path: "/", Backends: []Backend{{ID: "a", Addr: hostPort(a)}, {ID: "b", Addr: hostPort(b)}}}}}
	mustUpdate(t, g, cfg)
	if !g.Drain("a") {
		t.Fatal("Drain(a) = false")
	}
	if g.Drain("nope") {
		t.Fatal("Drain of an unknown backend = true")
	}
	// A reload of the same config does not undo the drain.
	mustUpdate(t, g, cfg)
	url := "http://" + g.HTTPAddr().String() + "/"
	for i := 0; i < 6; i++ {
		if _, e, _ := get(t, noRedirect(), url, "x"); e.Name != "b" {
			t.Fatalf("request %d went to %q after Drain(a)", i, e.Name)
		}
	}
}

// TestHTTPDrainTimeout: a request outliving DrainTimeout is cut off.
func TestHTTPDrainTimeout(t *testing.T) {
	t.Parallel()
	g := newGateway(t, func(o *Options) { o.DrainTimeout = 200 * time.Millisecond })
	a := httpBackend(t, "a")
	mustUpdate(t, g, Config{Routes: []Route{{Service: "svc", Path: "/", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}})
	url := "http://" + g.HTTPAddr().String()
	done := make(chan int, 1)
	go func() {
		resp, err := noRedirect().Get(url + "/sleep?ms=10000")
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	eventually(t, 5*time.Second, "the request to be in flight", func() bool { return g.InFlight("a") == 1 })
	mustUpdate(t, g, Config{})
	select {
	case code := <-done:
		if code != 502 {
			t.Fatalf("cut-off request got %d, want 502", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("request not cut off at the drain timeout")
	}
	eventually(t, 2*time.Second, "InFlight(a) to drop to 0", func() bool { return g.InFlight("a") == 0 })
}

// TestInFlightSurvivesUpdate: a reload that keeps a backend keeps its
// counter.
func TestInFlightSurvivesUpdate(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	a := httpBackend(t, "a")
	cfg := Config{Routes: []Route{{Service: "svc", Path: "/", Policy: PolicyLeastOutstanding, Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}}
	mustUpdate(t, g, cfg)
	url := "http://" + g.HTTPAddr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := noRedirect().Get(url + "/sleep?ms=500"); err == nil {
			resp.Body.Close()
		}
	}()
	eventually(t, 5*time.Second, "the request to be in flight", func() bool { return g.InFlight("a") == 1 })
	before := g.backendState("a")
	cfg.Routes = append(cfg.Routes, Route{Service: "other", Path: "/other", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}})
	mustUpdate(t, g, cfg)
	if g.backendState("a") != before || g.InFlight("a") != 1 {
		t.Fatalf("counter lost across Update: InFlight %d", g.InFlight("a"))
	}
	<-done
	eventually(t, 2*time.Second, "InFlight(a) to drop to 0", func() bool { return g.InFlight("a") == 0 })
}

// TestUpdateUnderLoad: requests running while configs change all succeed,
// and none goes to a backend after Update removed it.
func TestUpdateUnderLoad(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	var removedHits atomic.Int64
	var removed atomic.Value // name of the backend currently out of the config
	removed.Store("")
	mk := func(name string) Backend {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if removed.Load() == name {
				removedHits.Add(1)
			}
			io.WriteString(w, name)
		}))
		t.Cleanup(srv.Close)
		return Backend{ID: name, Addr: hostPort(srv)}
	}
	bs := []Backend{mk("a"), mk("b"), mk("c")}
	mustUpdate(t, g, Config{Routes: []Route{{Service: "svc", Path: "/", Backends: bs}}})
	url := "http://" + g.HTTPAddr().String() + "/"
	stop := make(chan struct{})
	var failures, total atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := noRedirect()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(url)
				total.Add(1)
				if err != nil {
					failures.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failures.Add(1)
				}
			}
		}()
	}
	for i := 0; i < 60; i++ {
		out := bs[i%3]
		var in []Backend
		for _, b := range bs {
			if b != out {
				in = append(in, b)
			}
		}
		removed.Store("")
		mustUpdate(t, g, Config{Routes: []Route{{Service: "svc", Path: "/", Backends: in}}})
		// Requests picked before Update returned may still reach it; wait
		// for them, then count any later hit as a bug.
		eventually(t, 2*time.Second, "the removed backend to drain", func() bool { return g.InFlight(out.ID) == 0 })
		removed.Store(out.ID)
		time.Sleep(2 * time.Millisecond) // let traffic flow on this config
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || removedHits.Load() != 0 {
		t.Fatalf("%d of %d requests failed; %d reached a removed backend", failures.Load(), total.Load(), removedHits.Load())
	}
	t.Logf("%d requests across 60 config changes", total.Load())
}

// TestWebSocketUpgrade: an Upgrade passes through and the connection echoes
// both ways, beyond the route timeout (which covers only the upgrade).
func TestWebSocketUpgrade(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want an upgrade", 400)
			return
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			wsAccept(r.Header.Get("Sec-WebSocket-Key")))
		rw.Flush()
		io.Copy(c, rw) // echo raw bytes: framing does not matter to the proxy
	}))
	t.Cleanup(ws.Close)
	mustUpdate(t, g, Config{Routes: []Route{{Service: "ws", Host: "ws.example.test", Path: "/ws",
		Timeout: 100 * time.Millisecond, Backends: []Backend{{ID: "ws1", Addr: hostPort(ws)}}}}})

	c, err := net.Dial("tcp", g.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(c, "GET /ws/chat HTTP/1.1\r\nHost: ws.example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
		t.Fatalf("upgrade answer %d, accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	if g.InFlight("ws1") != 1 {
		t.Fatalf("InFlight during a WebSocket = %d, want 1", g.InFlight("ws1"))
	}
	for i, msg := range []string{"hello", "world"} {
		if i == 1 {
			time.Sleep(300 * time.Millisecond) // outlive the route timeout on purpose
		}
		io.WriteString(c, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %d: %q, %v", i, buf, err)
		}
	}
	c.Close()
	eventually(t, 5*time.Second, "the WebSocket to end", func() bool { return g.InFlight("ws1") == 0 })
}

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// TestH2C: HTTP/2 without TLS (prior knowledge) on the HTTP entrypoint.
func TestH2C(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	a := httpBackend(t, "a")
	mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Path: "/", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}})
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + g.HTTPAddr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e echoed
	json.NewDecoder(resp.Body).Decode(&e)
	if resp.ProtoMajor != 2 || e.Name != "a" || e.Proto != "HTTP/1.1" {
		t.Fatalf("client proto %s, backend %q saw %s; want HTTP/2 in front, HTTP/1.1 behind", resp.Proto, e.Name, e.Proto)
	}
}

// TestAccessLog: one line per request with its id and status, and no query
// string (which may hold secrets).
func TestAccessLog(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	g := newGateway(t, func(o *Options) { o.AccessLog = jsonLogger(&buf) })
	a := httpBackend(t, "a")
	mustUpdate(t, g, Config{Routes: []Route{{Service: "shop", Host: "shop.example.test", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}})
	url := "http://" + g.HTTPAddr().String()
	c := noRedirect()
	get(t, c, url+"/orders?token=s3cret", "shop.example.test", "Authorization", "Bearer hunter2", "X-Request-Id", "req-1")
	get(t, c, url+"/", "nowhere.test")
	// A line is written just after its response is sent.
	var lines []string
	eventually(t, 2*time.Second, "two access log lines", func() bool {
		lines = strings.Split(strings.TrimSpace(buf.String()), "\n")
		return len(lines) >= 2
	})
	if len(lines) != 2 {
		t.Fatalf("%d access log lines, want 2:\n%s", len(lines), buf.String())
	}
	var l1, l2 map[string]any
	json.Unmarshal([]byte(lines[0]), &l1)
	json.Unmarshal([]byte(lines[1]), &l2)
	if l1["request_id"] != "req-1" || l1["status"] != 200.0 || l1["service"] != "shop" || l1["backend"] != "a" || l1["path"] != "/orders" {
		t.Errorf("first line %v", l1)
	}
	if l2["status"] != 404.0 {
		t.Errorf("second line %v", l2)
	}
	if strings.Contains(buf.String(), "s3cret") || strings.Contains(buf.String(), "hunter2") {
		t.Errorf("access log leaks a secret:\n%s", buf.String())
	}
}
