package gateway

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// These tests are not parallel: they count the process's open files and
// goroutines, which other tests would disturb (Go runs the parallel tests
// after the sequential ones).

// resources is what a leaked exchange holds.
type resources struct{ fds, goroutines int }

func countResources(t *testing.T) resources {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return resources{fds: len(fds), goroutines: runtime.NumGoroutine()}
}

// backToBaseline waits until the open files and goroutines are no more
// than base.
func backToBaseline(t *testing.T, base resources, within time.Duration) {
	t.Helper()
	var now resources
	deadline := time.Now().Add(within)
	for {
		now = countResources(t)
		if now.fds <= base.fds && now.goroutines <= base.goroutines {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("after %s: %d open files and %d goroutines, baseline %d and %d: the exchange leaked\n%s",
				within, now.fds, now.goroutines, base.fds, base.goroutines, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// bodyGateway starts a gateway (no route timeout) in front of an echo
// backend, and makes one request so that the backend pool holds its
// keep-alive connection before the baseline is taken.
func bodyGateway(t *testing.T, tweak func(*Options)) (addr string) {
	t.Helper()
	a := httpBackend(t, "a") // first: closed after the gateway
	g := newGateway(t, tweak)
	mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Host: "a.test", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}})
	addr = g.HTTPAddr().String()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	if code, _, _ := get(t, c, "http://"+addr+"/", "a.test"); code != 200 {
		t.Fatalf("warm-up: status %d", code)
	}
	return addr
}

// readAnswer reads the gateway's answer on c: its status (0 if the
// connection closed first) and whether the connection then closed.
func readAnswer(t *testing.T, c net.Conn, within time.Duration) (status int, closed bool) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		if isTimeout(err) {
			t.Fatalf("no answer and no close within %s", within)
		}
		return 0, true
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_, err = br.ReadByte()
	if isTimeout(err) {
		t.Fatalf("status %d, but the connection stayed open %s", resp.StatusCode, within)
	}
	return resp.StatusCode, err != nil
}

// TestBadBodyReleasesEverything: a request body that is malformed or cut
// short gets its answer at once and the connection closes, and every
// resource of the exchange (client and backend connections, goroutines)
// is released — on a route without a timeout. Before, such a request got
// no answer and held two connections for minutes.
func TestBadBodyReleasesEverything(t *testing.T) {
	big := strings.Repeat("x", 70<<10) // over syncBodyMax: written by its own goroutine
	for _, tc := range []struct {
		name string
		req  string
		half bool // half-close after the request: the body ends early
		want int
	}{
		{"malformed chunk line", "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n", false, 400},
		{"malformed chunk end", "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", false, 400},
		{"truncated Content-Length over 64 KiB", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100000\r\n\r\n" + big, true, 400},
		{"truncated Content-Length under 64 KiB", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1000\r\n\r\nshort", true, 400},
		{"truncated chunked body", "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n" + big[:1000], true, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := bodyGateway(t, nil)
			base := countResources(t)
			for i := 0; i < 5; i++ {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := io.WriteString(c, tc.req); err != nil {
					t.Fatal(err)
				}
				if tc.half {
					c.(*net.TCPConn).CloseWrite()
				}
				status, closed := readAnswer(t, c, 10*time.Second)
				c.Close()
				if status != tc.want && status != 0 || !closed {
					t.Fatalf("request %d: status %d, closed %v; want %d and a close", i, status, closed, tc.want)
				}
				if i == 0 && status == 0 {
					t.Errorf("the first bad body got no answer, only a close")
				}
			}
			backToBaseline(t, base, 10*time.Second)
		})
	}
}

// TestSlowBodyCutOff: a body trickled in (slow loris on the body) is cut
// off by the body bounds even on a route without a timeout — when proxied
// (Content-Length or chunked) and when drained after a 404.
func TestSlowBodyCutOff(t *testing.T) {
	const timeout = 500 * time.Millisecond
	for _, tc := range []struct{ name, head string }{
		{"Content-Length", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100000\r\n\r\n"},
		{"chunked", "POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n186a0\r\n"},
		{"no route", "POST / HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 100000\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := bodyGateway(t, func(o *Options) { o.BodyTimeout = timeout; o.BodyMinRate = 1000 })
			base := countResources(t)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tc.head); err != nil {
				t.Fatal(err)
			}
			// 20 bytes a second, well under the minimum rate, and never a
			// pause as long as the timeout: only the rate can cut it off.
			start := time.Now()
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				tick := time.NewTicker(50 * time.Millisecond) // the attack's pace
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						if _, err := c.Write([]byte("x")); err != nil {
							return
						}
					}
				}
			}()
			status, closed := readAnswer(t, c, 15*time.Second)
			took := time.Since(start)
			if !closed {
				t.Fatalf("status %d and the connection stays open", status)
			}
			if took > 10*time.Second {
				t.Errorf("cut off after %s, want about %s", took, timeout)
			}
			if tc.name != "no route" && status != http.StatusRequestTimeout && status != 0 {
				t.Errorf("status %d, want 408", status)
			}
			c.Close()
			backToBaseline(t, base, 10*time.Second)
		})
	}
}

// TestContentLengthAndChunkedCloses: a request framed both ways is
// answered (by its chunked body, the Content-Length ignored) and then the
// connection closes (RFC 9112, section 6.1): what follows on it may have
// been framed differently by a proxy in front.
func TestContentLengthAndChunkedCloses(t *testing.T) {
	addr := bodyGateway(t, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
	if _, err := io.WriteString(c, req+"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"body":"hello"`) {
		t.Fatalf("status %d, body %s", resp.StatusCode, body)
	}
	if !resp.Close {
		t.Errorf("no Connection: close in the answer")
	}
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Errorf("the connection answered a second request (err %v); want it closed", err)
	}
}

// TestStalledReaderCutOff: a client that asks for a large response and
// stops reading it is disconnected after WriteTimeout without progress, and
// the backend connection is released (the backend's write fails), on a
// route without a timeout.
func TestStalledReaderCutOff(t *testing.T) {
	handlerDone := make(chan error, 1)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				handlerDone <- err
				return
			}
		}
	}))
	t.Cleanup(be.Close)
	g := newGateway(t, func(o *Options) { o.WriteTimeout = 500 * time.Millisecond })
	mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Host: "a.test", Backends: []Backend{{ID: "a", Addr: hostPort(be)}}}}})
	c, err := net.Dial("tcp", g.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-handlerDone:
	case <-time.After(15 * time.Second):
		t.Fatal("the backend still streams to a client that stopped reading 15s ago")
	}
}

// TestSlowBodyCutOffH2: the body bounds apply to an HTTP/2 stream as well.
func TestSlowBodyCutOffH2(t *testing.T) {
	t.Parallel()
	g := newGateway(t, func(o *Options) { o.BodyTimeout = 500 * time.Millisecond })
	a := httpBackend(t, "a")
	mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Host: "a.test", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}})
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &protos}, Timeout: 15 * time.Second}
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("x")) // and then nothing
	req, _ := http.NewRequest("POST", "http://"+g.HTTPAddr().String()+"/", pr)
	req.Host = "a.test"
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("after %s: %v", time.Since(start), err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("%s %d, want HTTP/2 408", resp.Proto, resp.StatusCode)
	}
}
