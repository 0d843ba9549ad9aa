package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berth-project/berth/internal/gateway/http1"
)

// The HTTP client side of the gateway. It is not net/http's Transport: that
// one hands every request to two goroutines per connection (a read loop and
// a write loop), which cost more than half of the gateway's CPU time per
// request in the benchmark. Here the request's own goroutine writes the
// request and reads the response on a pooled keep-alive connection.

const (
	// backendIdleTimeout closes pooled connections idle this long (the
	// backend would close them soon anyway).
	backendIdleTimeout = 60 * time.Second
	// awaitIdleMax is the longest a pooled connection may have been idle
	// for flushAwait to be used on it: a backend may have closed one idle
	// longer (its keep-alive timeout), and a backend that only half-closes
	// (a lingering close) would make flushAwait wait for its full close.
	awaitIdleMax = time.Second
	// syncBodyMax is the largest request body written before the response
	// is read; a larger one (or one of unknown length) is written by its
	// own goroutine, so that a backend that answers while it reads (an
	// echo) cannot deadlock with us.
	syncBodyMax = 64 << 10
)

// errStale marks a pooled connection the backend had closed: no response
// byte came back, so an idempotent request may be sent again.
var errStale = errors.New("gateway: pooled backend connection was closed")

// bconn is a keep-alive connection to one backend.
type bconn struct {
	b      *backendState
	c      *net.TCPConn
	raw    syscall.RawConn
	br     *bufio.Reader
	bw     *bufio.Writer
	stop   func() bool        // unhooks the backend's kill context
	idleAt time.Time          // when it went back to the pool
	dline  bool               // a deadline is set
	head   http1.ResponseHead // the response being read; its buffers are reused
	closed atomic.Bool
	peek   func(fd uintptr) bool
	peekOK bool
	// await is flushAwait's callback (made once per connection); awaitErr
	// and awaiting are its state.
	await    func(fd uintptr) bool
	awaitErr error
	awaiting bool
	// recent is set by getConn for a new connection or one idle less than
	// awaitIdleMax: flushAwait may be used.
	recent bool
}

// connPool holds a backend's idle connections, most recently used first.
type connPool struct {
	mu     sync.Mutex
	idle   []*bconn
	closed bool
}

// getConn returns an idle connection to b, or a new one; reused says which.
// With check, a pooled connection is first probed for a close by the backend
// (one non-blocking peek, a system call); without, it is used as it is: the
// caller can send its request again on a new connection if the pooled one
// turns out closed (roundTrip does so for replayable requests, which is why
// it skips the probe for them — a system call less per request).
func (g *Gateway) getConn(b *backendState, check bool) (c *bconn, reused bool, err error) {
	p := &b.pool
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		c = p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if idle := time.Since(c.idleAt); idle < backendIdleTimeout && (!check || c.alive()) {
			c.recent = idle < awaitIdleMax
			return c, true, nil
		}
		c.close()
	}
	nc, err := g.dialer.DialContext(b.kill, "tcp", b.Addr)
	if err != nil {
		return nil, false, &dialError{addr: b.Addr, err: err}
	}
	tc := nc.(*net.TCPConn)
	raw, err := tc.SyscallConn()
	if err != nil {
		tc.Close()
		return nil, false, &dialError{addr: b.Addr, err: err}
	}
	c = newBconn(b, tc, raw)
	c.recent = true
	return c, false, nil
}

func newBconn(b *backendState, tc *net.TCPConn, raw syscall.RawConn) *bconn {
	c := &bconn{b: b, c: tc, raw: raw, br: bufio.NewReaderSize(tc, 16<<10), bw: bufio.NewWriterSize(tc, 8<<10)}
	// The backend's drain time is over: cut every connection to it.
	c.stop = context.AfterFunc(b.kill, func() { tc.Close() })
	// Made once per connection, not per check.
	c.peek = func(fd uintptr) bool {
		var buf [1]byte
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		c.peekOK = err == syscall.EAGAIN
		return true
	}
	c.await = func(uintptr) bool {
		if c.awaiting {
			return true // woken by the poller: the answer is there
		}
		c.awaiting = true
		if c.awaitErr = c.bw.Flush(); c.awaitErr != nil {
			return true
		}
		return false // wait until readable
	}
	return c
}

// flushAwait sends the buffered request and waits until the backend's
// answer can be read, without the read attempt that a Flush followed by a
// read makes first (and that fails with EAGAIN, as the answer cannot be
// there yet): one system call less per request.
//
// It relies on the order of the exchange. RawConn.Read resets the
// connection's read readiness before it calls await, and await writes the
// request only then, so the readiness the answer raises cannot be lost. Data
// the backend sent before the request (it should send none) arrives before
// the reset: that wait would then last until the answer arrives, which
// still ends it. A wake-up without data costs only the read that would have
// been made anyway.
//
// A connection idle for longer than awaitIdleMax is flushed and read the
// ordinary way: the read then sees at once a close that came while it was
// idle, and a replayable request is sent again on a new connection.
func (c *bconn) flushAwait() error {
	if !c.recent {
		return c.bw.Flush()
	}
	c.awaiting, c.awaitErr = false, nil
	if err := c.raw.Read(c.await); err != nil {
		return err
	}
	return c.awaitErr
}

// alive reports whether a pooled connection still looks usable: nothing to
// read (no EOF, no stray bytes). One non-blocking peek, instead of a reader
// goroutine per idle connection.
func (c *bconn) alive() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	c.peekOK = false
	err := c.raw.Read(c.peek)
	return err == nil && c.peekOK
}

// release ends the use of c by one exchange: back to the pool if reusable,
// closed otherwise.
func (g *Gateway) release(c *bconn, reusable bool) {
	if c.dline {
		if reusable && c.c.SetDeadline(time.Time{}) != nil {
			reusable = false
		}
		c.dline = false
	}
	if !reusable {
		c.close()
		return
	}
	p := &c.b.pool
	c.idleAt = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) >= g.opts.MaxIdleConnsPerHost {
		p.mu.Unlock()
		c.close()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

func (c *bconn) close() {
	if c.closed.Swap(true) {
		return
	}
	c.stop()
	c.c.Close()
}

// closeIdle closes the pool's idle connections and keeps it closed.
func (p *connPool) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.closed = true
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}

// outReq is a request as it goes to a backend. Its header comes from the
// gateway's own HTTP/1 parser (head) or from net/http's HTTP/2 server
// (header).
type outReq struct {
	method   string
	uri      []byte // request target, origin form
	host     []byte
	head     *http1.RequestHead
	header   http.Header
	clientIP []byte
	tls      bool
	id       string
	upgrade  []byte // the Upgrade header, for a connection upgrade
	body     *bodyReader
	// writer, when not nil, gets the result of the goroutine that writes a
	// large body. The caller must not reuse the backend connection, nor
	// read the client connection, until it is done.
	writer chan error
}

// writerDone reports whether the body writer (if any) finished well.
func (o *outReq) writerDone() bool {
	if o.writer == nil {
		return true
	}
	select {
	case err := <-o.writer:
		o.writer = nil
		return err == nil
	default:
		return false
	}
}

// bodyReader is a request body on its way to a backend. It records whether
// it reached its end (the client connection can then be reused), bounds
// each read with a deadline (Options.BodyTimeout and BodyMinRate), and
// records a failed read from the client: the body is malformed, cut short
// or too slow, and the exchange must end at once.
type bodyReader struct {
	r      io.Reader
	length int64 // -1: unknown (chunked)
	eof    bool

	// setDeadline sets the client's read deadline before each read; nil
	// for none.
	setDeadline func(time.Time) error
	timeout     time.Duration
	minRate     int64
	start       time.Time
	n           int64 // bytes read

	// err is the client's error; it is set before failed, and read only
	// after failed is seen true (or by the goroutine that reads the body).
	err    error
	failed atomic.Bool
}

// init readies b for a new body (b is reused; it holds an atomic, so it is
// not copied).
func (b *bodyReader) init(r io.Reader, length int64, setDeadline func(time.Time) error, timeout time.Duration, minRate int) {
	b.r, b.length, b.eof = r, length, false
	b.setDeadline, b.timeout, b.minRate, b.n = setDeadline, timeout, int64(minRate), 0
	b.start = time.Now()
	b.err = nil
	b.failed.Store(false)
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.failed.Load() {
		return 0, b.err
	}
	if b.setDeadline != nil {
		// The sooner of: no byte for timeout, or behind minRate after
		// the timeout's grace.
		d := time.Now().Add(b.timeout)
		if b.minRate > 0 {
			credit := time.Duration(b.n/b.minRate)*time.Second + time.Duration(b.n%b.minRate)*time.Second/time.Duration(b.minRate)
			if r := b.start.Add(b.timeout + credit); r.Before(d) {
				d = r
			}
		}
		b.setDeadline(d)
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.err = &bodyError{err: err}
		b.failed.Store(true)
		return n, b.err
	}
	return n, err
}

// Close does nothing: the body belongs to the client connection.
func (b *bodyReader) Close() error { return nil }

// bodyError is a request body the client did not send whole and well: a
// malformed chunk, a body cut short, one too slow, a connection gone.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "gateway: request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// replayable reports whether a request may be sent again after a pooled
// connection failed before answering: an idempotent method and no body.
// (It must not look at the body: a writer goroutine may be reading it.)
func (o *outReq) replayable() bool {
	if o.body != nil {
		return false
	}
	switch o.method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// roundTrip sends o to ex's backend and returns the response head (owned
// by the returned connection, which the caller releases once it has read
// the body).
// Connection failures move the request to another backend; a pooled
// connection found closed is replaced for requests that can be replayed.
func (g *Gateway) roundTrip(ex *exchange, o *outReq) (*http1.ResponseHead, *bconn, error) {
	for attempt := 1; ; attempt++ {
		// A replayable request found a closed pooled connection on its
		// first attempt: probe the next ones.
		c, reused, err := g.getConn(ex.backend, !o.replayable() || attempt > 1)
		if err != nil {
			// Never reached the backend: eject it, try another.
			g.ejectBackend(ex.backend, err)
			if attempt >= maxAttempts || !g.switchBackend(ex) {
				return nil, nil, err
			}
			continue
		}
		if !ex.deadline.IsZero() {
			c.dline = true
			c.c.SetDeadline(ex.deadline)
		}
		resp, err := c.exchange(o)
		if err == nil {
			ex.backend.succeeded()
			return resp, c, nil
		}
		c.close()
		if reused && errors.Is(err, errStale) && o.replayable() && attempt < maxAttempts {
			continue
		}
		return nil, nil, err
	}
}

// switchBackend moves ex to another backend of its route after a failure.
func (g *Gateway) switchBackend(ex *exchange) bool {
	ex.tried = append(ex.tried, ex.backend)
	next := g.repick(ex)
	if next == nil {
		return false
	}
	ex.backend.inflight.Add(-1)
	ex.backend = next
	return true
}

// repick selects another backend of ex's route from the table in force.
func (g *Gateway) repick(ex *exchange) *backendState {
	t := g.acquire()
	defer t.release()
	rt := t.router.byKey[ex.route.key]
	if rt == nil {
		return nil
	}
	return rt.pool.pick(g.now, ex.tried)
}

// exchange writes o and reads the response head (skipping 1xx other than
// 101).
func (c *bconn) exchange(o *outReq) (*http1.ResponseHead, error) {
	w := c.bw
	writeRequestHead(w, o)
	if o.body != nil {
		if o.body.length >= 0 && o.body.length <= syncBodyMax {
			if err := copyBodyTo(w, o.body); err != nil {
				return nil, err
			}
			if err := c.flushAwait(); err != nil {
				return nil, err
			}
		} else {
			if err := w.Flush(); err != nil {
				return nil, err
			}
			done := make(chan error, 1)
			o.writer = done
			go func() {
				err := writeBody(w, o.body)
				if err != nil && o.body.failed.Load() {
					// The backend waits for the rest of a body that will
					// not come, and the exchange waits for the backend:
					// end both now (the exchange answers the client).
					c.close()
				}
				done <- err
			}()
		}
	} else if err := c.flushAwait(); err != nil {
		return nil, err
	}
	if _, err := c.br.Peek(1); err != nil {
		if isTimeout(err) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", errStale, err)
	}
	if err := http1.ReadResponseHead(c.br, o.method, &c.head); err != nil {
		return nil, err
	}
	return &c.head, nil
}

// writeBody sends a request body, chunked when its length is unknown, and
// flushes.
func writeBody(w *bufio.Writer, body *bodyReader) error {
	if body.length >= 0 {
		if err := copyBodyTo(w, body); err != nil {
			return err
		}
		return w.Flush()
	}
	buf := getBuffer()
	defer putBuffer(buf)
	cw := httputil.NewChunkedWriter(w)
	if _, err := io.CopyBuffer(cw, body, *buf); err != nil {
		return err
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if _, err := w.WriteString("\r\n"); err != nil {
		return err
	}
	return w.Flush()
}

// copyBodyTo copies a body of known length to w, without the final flush.
func copyBodyTo(w *bufio.Writer, body *bodyReader) error {
	buf := getBuffer()
	defer putBuffer(buf)
	n, err := io.CopyBuffer(w, io.LimitReader(body, body.length), *buf)
	if err == nil && n < body.length {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// writeRequestHead writes the request line and headers: the client's
// headers minus hop-by-hop ones, and the gateway's forwarding headers
// (which replace the client's: the client is not trusted to say where it
// comes from).
func writeRequestHead(w *bufio.Writer, o *outReq) {
	w.WriteString(o.method)
	w.WriteByte(' ')
	w.Write(o.uri)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.Write(o.host)
	w.WriteString("\r\n")
	if h := o.head; h != nil {
		for _, l := range h.Lines {
			if !l.Skip {
				w.Write(h.Name(l))
				w.WriteString(": ")
				w.Write(h.Value(l))
				w.WriteString("\r\n")
			}
		}
	} else {
		listed := connectionTokens(o.header)
		for k, vs := range o.header {
			if skipRequestHeader(k) || (listed != nil && listed[k]) {
				continue
			}
			for _, v := range vs {
				w.WriteString(k)
				w.WriteString(": ")
				w.WriteString(v)
				w.WriteString("\r\n")
			}
		}
	}
	if len(o.upgrade) > 0 {
		w.WriteString("Connection: Upgrade\r\nUpgrade: ")
		w.Write(o.upgrade)
		w.WriteString("\r\n")
	}
	w.WriteString("X-Forwarded-For: ")
	w.Write(o.clientIP)
	w.WriteString("\r\nX-Forwarded-Host: ")
	w.Write(o.host)
	if o.tls {
		w.WriteString("\r\nX-Forwarded-Proto: https\r\nX-Request-Id: ")
	} else {
		w.WriteString("\r\nX-Forwarded-Proto: http\r\nX-Request-Id: ")
	}
	w.WriteString(o.id)
	w.WriteString("\r\n")
	switch {
	case o.body != nil && o.body.length >= 0:
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.FormatInt(o.body.length, 10))
		w.WriteString("\r\n")
	case o.body != nil:
		w.WriteString("Transfer-Encoding: chunked\r\n")
	case o.method == http.MethodPost || o.method == http.MethodPut || o.method == http.MethodPatch:
		w.WriteString("Content-Length: 0\r\n")
	}
	w.WriteString("\r\n")
}

// skipRequestHeader reports the HTTP/2 client headers not forwarded as they
// are: hop-by-hop headers, framing (rewritten), and those the gateway sets.
func skipRequestHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Content-Length", "Expect",
		"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Request-Id":
		return true
	}
	return false
}

// connectionTokens returns the headers a Connection header names (which are
// hop-by-hop too), or nil.
func connectionTokens(h http.Header) map[string]bool {
	vs := h["Connection"]
	if len(vs) == 0 {
		return nil
	}
	var m map[string]bool
	for _, v := range vs {
		for len(v) > 0 {
			var tok string
			tok, v = cutComma(v)
			if tok == "" {
				continue
			}
			switch lower(tok) {
			case "close", "keep-alive", "upgrade":
				continue // not header names (and handled)
			}
			if m == nil {
				m = map[string]bool{}
			}
			m[http.CanonicalHeaderKey(tok)] = true
		}
	}
	return m
}

func cutComma(v string) (tok, rest string) {
	i := 0
	for i < len(v) && v[i] != ',' {
		i++
	}
	tok = v[:i]
	if i < len(v) {
		rest = v[i+1:]
	}
	for len(tok) > 0 && (tok[0] == ' ' || tok[0] == '\t') {
		tok = tok[1:]
	}
	for len(tok) > 0 && (tok[len(tok)-1] == ' ' || tok[len(tok)-1] == '\t') {
		tok = tok[:len(tok)-1]
	}
	return tok, rest
}

func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// copy buffers.
var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func getBuffer() *[]byte  { return buffers.Get().(*[]byte) }
func putBuffer(b *[]byte) { buffers.Put(b) }

// dialError marks an error from connecting to a backend: the request never
// reached it, so it may be retried elsewhere.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string {
	return fmt.Sprintf("gateway: connect to backend %s: %v", e.addr, e.err)
}
func (e *dialError) Unwrap() error { return e.err }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
