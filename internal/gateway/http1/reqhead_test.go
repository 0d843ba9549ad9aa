package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

var reqSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a/b?c=d&e HTTP/1.1\r\nHost: shop.example.test:8080\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n",
	"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
	"GET http://h.test/p?q HTTP/1.1\r\nHost: x\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /%41%2f HTTP/1.0\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\nX-Bar:  two  \r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
	"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
	"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
	"GET / HTTP/1.1\nHost: a\n\n",
	"get /x HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc\r\n\r\n",
	"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
	"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
}

// FuzzRequestHead checks the gateway's request parser against net/http's:
// it must never accept a request net/http rejects, and when both accept
// one they must read it the same way (method, target, host, framing, body,
// headers). Run longer with: go test -fuzz FuzzRequestHead ./internal/gateway/http1
func FuzzRequestHead(f *testing.F) {
	for _, s := range reqSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h RequestHead
		err := ReadRequestHead(bufio.NewReaderSize(bytes.NewReader(data), 64), 1<<16, &h)
		if err != nil {
			return // stricter than net/http is allowed
		}
		req, rerr := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if rerr == nil {
			rerr = serverChecks(req, data)
		}
		if rerr != nil {
			t.Fatalf("the gateway accepts what net/http rejects (%v): %q", rerr, data)
		}
		check := func(what, ours, theirs string) {
			if ours != theirs {
				t.Fatalf("%s: ours %q, net/http %q, for %q", what, ours, theirs, data)
			}
		}
		check("method", string(h.Span(h.Method)), req.Method)
		check("target", string(h.Span(h.target)), req.RequestURI)
		check("host", string(h.Span(h.Host)), req.Host)
		check("path", string(h.Path), req.URL.Path)
		// Framed both ways: we close after the answer (RFC 9112, section
		// 6.1), net/http does not.
		clte := h.Close && !req.Close && h.Chunked && bytes.Contains(bytes.ToLower(data), []byte("content-length:"))
		if h.Minor != req.ProtoMinor || h.Close != req.Close && !clte {
			t.Fatalf("minor %d/%d close %v/%v for %q", h.Minor, req.ProtoMinor, h.Close, req.Close, data)
		}
		if h.Chunked != (len(req.TransferEncoding) > 0) {
			t.Fatalf("chunked %v, net/http %v, for %q", h.Chunked, req.TransferEncoding, data)
		}
		if !h.Chunked && max(h.ContentLength, 0) != req.ContentLength {
			t.Fatalf("length %d, net/http %d, for %q", h.ContentLength, req.ContentLength, data)
		}
		// Forwarded headers: the same values, in the same order, for every
		// name we pass on.
		ours := map[string][]string{}
		for _, l := range h.Lines {
			if !l.Skip {
				k := http.CanonicalHeaderKey(string(h.Name(l)))
				ours[k] = append(ours[k], string(h.Value(l)))
			}
		}
		for k, vs := range ours {
			check("header "+k, strings.Join(vs, "\x00"), strings.Join(req.Header[k], "\x00"))
		}
		// The bodies.
		var ob, tb []byte
		var oerr, terr error
		if h.Body != nil {
			ob, oerr = io.ReadAll(h.Body)
		}
		tb, terr = io.ReadAll(req.Body)
		if (oerr == nil) != (terr == nil) || (oerr == nil && !bytes.Equal(ob, tb)) {
			t.Fatalf("body %q (%v), net/http %q (%v), for %q", ob, oerr, tb, terr, data)
		}
	})
}

// serverChecks are the checks net/http's server makes beyond ReadRequest.
func serverChecks(req *http.Request, data []byte) error {
	hasHost := false
	for _, line := range bytes.Split(data, []byte("\n"))[1:] {
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		if len(line) >= 5 && strings.EqualFold(string(line[:5]), "host:") {
			hasHost = true
		}
	}
	if req.ProtoAtLeast(1, 1) && !hasHost {
		return errors.New("missing Host")
	}
	if !httpguts.ValidHostHeader(req.Host) {
		return errors.New("bad Host")
	}
	for k, vs := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return errors.New("bad header name")
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return errors.New("bad header value")
			}
		}
	}
	if e := req.Header.Get("Expect"); e != "" && !strings.EqualFold(e, "100-continue") {
		return errors.New("expectation failed")
	}
	return nil
}

func TestReadReqHead(t *testing.T) {
	cases := []struct {
		in     string
		status int // 0: accepted
	}{
		{reqSeeds[0], 0},
		{"GET / HTTP/1.1\r\n\r\n", 400},                           // no Host
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},     // two Hosts
		{"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400},     // obs-fold
		{"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400}, // space in name
		{"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400},   // control char
		{"GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", 400},            // bare CR
		{"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400},             // bad escape
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
		{"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", 417},
		{"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 405},
		{"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400},
		{"GET ftp://h/x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"GET http://user@h/x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("a", 70000) + "\r\n\r\n", 431},
		{"GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + strings.Repeat("a", 10000) + "\r\n\r\n", 0}, // longer than the buffer
	}
	for _, c := range cases {
		var h RequestHead
		err := ReadRequestHead(bufio.NewReaderSize(strings.NewReader(c.in), 4096), 64<<10, &h)
		status := 0
		var re *RequestError
		if errors.As(err, &re) {
			status = re.Status
		} else if err != nil {
			t.Errorf("%.60q: I/O error %v", c.in, err)
			continue
		}
		if status != c.status {
			t.Errorf("%.60q: status %d (%v), want %d", c.in, status, err, c.status)
		}
	}
}

func TestReadRespHead(t *testing.T) {
	cases := []struct {
		in      string
		method  string
		ok      bool
		length  int64
		chunked bool
		close   bool
		noBody  bool
		status  int
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET", true, 2, false, false, false, 200},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", "GET", true, -1, true, false, false, 200},
		{"HTTP/1.1 200 OK\r\n\r\nto the end", "GET", true, -1, false, true, false, 200},
		{"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET", true, 2, false, true, false, 200},
		{"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", "GET", true, 2, false, false, false, 200},
		{"HTTP/1.1 204 No Content\r\n\r\n", "GET", true, -1, false, false, true, 204},
		{"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "HEAD", true, 99, false, false, true, 200},
		{"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", "PUT", true, 0, false, false, false, 201},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", "GET", true, -1, false, false, true, 101},
		{"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "GET", true, 0, false, false, false, 200}, // no reason
		{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "GET", false, 0, false, false, false, 0},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "GET", false, 0, false, false, false, 0},
		{"HTTP/1.1 200 OK\r\n folded\r\n\r\n", "GET", false, 0, false, false, false, 0},
		{"HTTP/1.1 2x0 OK\r\n\r\n", "GET", false, 0, false, false, false, 0},
		{"HTTP/2 200\r\n\r\n", "GET", false, 0, false, false, false, 0},
		{"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", "GET", false, 0, false, false, false, 0},
	}
	for _, c := range cases {
		var h ResponseHead
		err := ReadResponseHead(bufio.NewReader(strings.NewReader(c.in)), c.method, &h)
		if (err == nil) != c.ok {
			t.Errorf("%q: err %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if err != nil {
			continue
		}
		if h.Status != c.status || h.ContentLength != c.length || h.chunked != c.chunked || h.Close != c.close || h.NoBody != c.noBody {
			t.Errorf("%q: status %d length %d chunked %v close %v noBody %v", c.in, h.Status, h.ContentLength, h.chunked, h.Close, h.NoBody)
		}
	}
	// Hop-by-hop headers, and those a Connection header names, are not
	// passed on.
	var h ResponseHead
	in := "HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nX-Request-Id: theirs\r\nX-App: yes\r\nContent-Length: 0\r\n\r\n"
	if err := ReadResponseHead(bufio.NewReader(strings.NewReader(in)), "GET", &h); err != nil {
		t.Fatal(err)
	}
	var passed []string
	for _, l := range h.Lines {
		if !l.Skip {
			passed = append(passed, string(h.Name(l)))
		}
	}
	if strings.Join(passed, ",") != "X-App" {
		t.Fatalf("passed on %v, want only X-App", passed)
	}
}

// FuzzResponseHead checks the gateway's response parser against
// net/http's ReadResponse in the same way as FuzzRequestHead.
func FuzzResponseHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nX-A: 1\r\n\r\nbody",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		var h ResponseHead
		if err := ReadResponseHead(bufio.NewReaderSize(bytes.NewReader(data), 64), method, &h); err != nil {
			return
		}
		br := bufio.NewReader(bytes.NewReader(data))
		var resp *http.Response
		var err error
		for {
			resp, err = http.ReadResponse(br, &http.Request{Method: method})
			if err != nil || resp.StatusCode >= 200 || resp.StatusCode == 101 {
				break
			}
		}
		if err != nil {
			t.Fatalf("the gateway accepts what net/http rejects (%v): %q", err, data)
		}
		if h.Status != resp.StatusCode || h.Close != resp.Close {
			t.Fatalf("status %d/%d close %v/%v for %q", h.Status, resp.StatusCode, h.Close, resp.Close, data)
		}
		if h.chunked != (len(resp.TransferEncoding) > 0) && !h.NoBody {
			t.Fatalf("chunked %v, net/http %v, for %q", h.chunked, resp.TransferEncoding, data)
		}
		var ob []byte
		var oerr error
		if !h.NoBody {
			ob, oerr = io.ReadAll(h.Body)
		}
		tb, terr := io.ReadAll(resp.Body)
		if (oerr == nil) != (terr == nil) || (oerr == nil && !bytes.Equal(ob, tb)) {
			t.Fatalf("body %q (%v), net/http %q (%v), for %q", ob, oerr, tb, terr, data)
		}
	})
}
