package gateway

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The HTTP entrypoints. HTTP/1.x connections are served by the gateway's
// own loop (h1.go); HTTP/2 connections (h2 by ALPN over TLS, h2c by prior
// knowledge on the plain entrypoint) are handed to a net/http server. Both
// route and proxy the same way, through roundTrip.

// hstsValue is the Strict-Transport-Security header of routes with HSTS.
const hstsValue = "max-age=31536000"

// statusClientClosed is logged for requests the client gave up on (nginx's
// convention); it is never sent.
const statusClientClosed = 499

// entrypoint is the shared HTTP or HTTPS listener.
type entrypoint struct {
	name   string
	tls    bool
	tlsCfg *tls.Config
	keys   *ticketKeys // of tlsCfg
	ln     *limitListener
	h2     *http.Server  // serves the connections handed to it
	h2ln   *chanListener // through this
}

func (g *Gateway) listenEntrypoint(name, addr string, isTLS bool) (*entrypoint, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gateway: %s entrypoint: %w", name, err)
	}
	ep := &entrypoint{name: name, tls: isTLS, ln: newLimitListener(ln, g.opts.MaxConns)}
	ep.h2ln = newChanListener(ln.Addr())
	// The server gets every connection through an h2guard (not a
	// *tls.Conn), so it serves all of them as HTTP/2 with prior
	// knowledge; ALPN was done by serveConn.
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	if isTLS {
		ep.tlsCfg = &tls.Config{
			MinVersion:     tls.VersionTLS12,
			CipherSuites:   cipherSuites,
			GetCertificate: g.getCertificate,
			NextProtos:     []string{"h2", "http/1.1"},
		}
		ep.keys = &ticketKeys{cfg: ep.tlsCfg}
		if err := ep.keys.rotate(); err != nil {
			ln.Close()
			return nil, err
		}
	}
	ep.h2 = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.serveH2(w, r, isTLS) }),
		ReadHeaderTimeout: g.opts.ReadHeaderTimeout,
		IdleTimeout:       g.opts.IdleTimeout,
		MaxHeaderBytes:    g.opts.MaxHeaderBytes,
		Protocols:         &protos,
		// RFC 9113's default, which h2guard reads frames up to (and
		// HAProxy's and nginx's); net/http's would be 1 MiB.
		HTTP2:     &http.HTTP2Config{MaxReadFrameSize: h2MaxFrame},
		TLSConfig: ep.tlsCfg,
		ErrorLog:  slog.NewLogLogger(g.log.With("entrypoint", name).Handler(), slog.LevelDebug),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				g.conns.Add(1) // on the Serve goroutine, counted in g.wg
			case http.StateClosed, http.StateHijacked:
				g.conns.Done()
			}
		},
	}
	return ep, nil
}

func (g *Gateway) serveEntrypoint(ep *entrypoint) {
	if ep.keys != nil {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			tick := time.NewTicker(g.opts.TicketKeyRotation)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					if err := ep.keys.rotate(); err != nil {
						g.log.Error("session ticket keys not rotated", "entrypoint", ep.name, "err", err)
					}
				case <-g.ctx.Done():
					return
				}
			}
		}()
	}
	g.wg.Add(2)
	go func() {
		defer g.wg.Done()
		err := ep.h2.Serve(ep.h2ln)
		if !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			g.log.Error("HTTP/2 server stopped", "entrypoint", ep.name, "err", err)
		}
	}()
	go func() {
		defer g.wg.Done()
		var delay time.Duration
		for {
			c, err := ep.ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				g.log.Warn("accept failed", "entrypoint", ep.name, "err", err, "retry_in", delay)
				select {
				case <-time.After(delay):
				case <-g.ctx.Done():
					return
				}
				continue
			}
			delay = 0
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				g.serveConn(ep, c)
			}()
		}
	}()
}

// close stops accepting and closes the HTTP/2 connections; HTTP/1
// connections end with the gateway's context.
func (ep *entrypoint) close() error {
	err := ep.ln.Close()
	ep.h2ln.Close()
	return errors.Join(err, ep.h2.Close())
}

// chanListener gives the HTTP/2 server the connections the gateway hands
// it.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// hand passes c to the server; false if it is closed.
func (l *chanListener) hand(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

// exchange is the gateway's state of one proxied request.
type exchange struct {
	route    *route
	backend  *backendState // counted in flight until the exchange ends
	tried    []*backendState
	id       string
	deadline time.Time // from the route's timeout
}

// dispatchBytes routes a request: the route (nil: 404), whether to
// redirect it to HTTPS, and its backend (nil: 503), counted in flight.
func (g *Gateway) dispatchBytes(host, path []byte, isTLS bool) (rt *route, redirect bool, b *backendState) {
	t := g.acquire()
	rt = t.router.matchBytes(host, path)
	redirect = rt != nil && rt.redirect && !isTLS
	if rt != nil && !redirect {
		b = rt.pool.pick(g.now, nil)
	}
	t.release()
	return rt, redirect, b
}

// init readies ex (which may be reused) for a request.
func (ex *exchange) init(rt *route, b *backendState, id string) {
	*ex = exchange{route: rt, backend: b, tried: ex.tried[:0], id: id}
	if rt.timeout > 0 {
		ex.deadline = time.Now().Add(rt.timeout)
	}
}

// errorStatus maps a failed exchange to the status the client gets.
func errorStatus(err error) (int, string) {
	var de *dialError
	switch {
	case isTimeout(err):
		return http.StatusGatewayTimeout, "504 gateway timeout: the backend did not answer in time\n"
	case errors.As(err, &de):
		return http.StatusBadGateway, "502 bad gateway: no backend could be reached\n"
	}
	return http.StatusBadGateway, "502 bad gateway: the backend did not answer\n"
}

// bodyErrorStatus maps a failed request body to the status the client
// gets.
func bodyErrorStatus(err error) (int, string) {
	if isTimeout(err) {
		return http.StatusRequestTimeout, "408 request timeout: the request body came too slowly\n"
	}
	return http.StatusBadRequest, "400 bad request: the request body is malformed or cut short\n"
}

// Pages of the gateway's own answers.
const (
	msgNotFound    = "404 page not found: the Berth gateway has no route for this host and path\n"
	msgUnavailable = "503 service unavailable: no healthy backend for this route\n"
)

// serveH2 routes and proxies one HTTP/2 request (net/http's handler).
func (g *Gateway) serveH2(w http.ResponseWriter, r *http.Request, isTLS bool) {
	// Counted while its connection is, so that Close waits for it.
	g.conns.Add(1)
	defer g.conns.Done()
	var start time.Time
	if g.access != nil {
		start = time.Now()
	}
	host := hostOnly(r.Host)
	rt, redirect, b := g.dispatchBytes([]byte(host), []byte(r.URL.Path), isTLS)
	id := requestID(r.Header.Get("X-Request-Id"))
	status, n, backend := 0, int64(0), ""
	switch {
	case rt == nil:
		status = http.StatusNotFound
		n = plainError(w, id, status, msgNotFound)
	case redirect:
		status = http.StatusPermanentRedirect
		w.Header()["X-Request-Id"] = []string{id}
		http.Redirect(w, r, "https://"+joinHostPort(host, g.httpsPort)+r.URL.RequestURI(), status)
	case b == nil:
		status = http.StatusServiceUnavailable
		n = plainError(w, id, status, msgUnavailable)
	default:
		ex := &exchange{}
		ex.init(rt, b, id)
		status, n = g.proxyH2(w, r, ex, isTLS)
		backend = ex.backend.ID
		ex.backend.inflight.Add(-1)
	}
	if g.access != nil {
		g.logAccess(r.RemoteAddr, r.Proto, r.Method, r.Host, r.URL.Path, id, rt, backend, status, n, start)
	}
}

func (g *Gateway) proxyH2(w http.ResponseWriter, r *http.Request, ex *exchange, isTLS bool) (int, int64) {
	o := &outReq{method: r.Method, uri: []byte(requestURI(r, ex.route)), host: []byte(r.Host), header: r.Header,
		clientIP: []byte(clientIP(r.RemoteAddr)), tls: isTLS, id: ex.id}
	rc := http.NewResponseController(w)
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		o.body = &bodyReader{}
		o.body.init(r.Body, r.ContentLength, rc.SetReadDeadline, g.opts.BodyTimeout, g.opts.BodyMinRate)
	}
	resp, c, err := g.roundTrip(ex, o)
	if err != nil {
		if r.Context().Err() != nil {
			return statusClientClosed, 0
		}
		if o.body != nil && o.body.failed.Load() {
			status, msg := bodyErrorStatus(o.body.err)
			return status, plainError(w, ex.id, status, msg)
		}
		g.log.Debug("proxy error", "request_id", ex.id, "service", ex.route.service, "backend", ex.backend.ID, "err", err)
		status, msg := errorStatus(err)
		return status, plainError(w, ex.id, status, msg)
	}
	if resp.Status == http.StatusSwitchingProtocols {
		g.release(c, false) // HTTP/2 has no upgrades
		return http.StatusBadGateway, plainError(w, ex.id, http.StatusBadGateway, "502 bad gateway: unexpected upgrade from the backend\n")
	}
	h := w.Header()
	for _, l := range resp.Lines {
		if !l.Skip {
			k := http.CanonicalHeaderKey(string(resp.Name(l)))
			h[k] = append(h[k], string(resp.Value(l)))
		}
	}
	h["X-Request-Id"] = []string{ex.id}
	if isTLS && ex.route.hsts {
		h["Strict-Transport-Security"] = []string{hstsValue}
	}
	if resp.ContentLength >= 0 && (!resp.NoBody || bodyAllowedLength(resp.Status)) {
		h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	w.WriteHeader(resp.Status)
	var n int64
	eof := resp.NoBody
	if !resp.NoBody {
		flush := func() { rc.Flush() }
		dw := &deadlineWriter{w: w, set: rc.SetWriteDeadline, d: g.opts.WriteTimeout}
		n, eof, err = copyBody(dw, resp.Body, c.br, flush, false)
	}
	g.release(c, eof && err == nil && !resp.Close && o.writerDone())
	return resp.Status, n
}

// bodyAllowedLength reports whether a response without a body may still
// say how long its body would be (HEAD and 304 answers).
func bodyAllowedLength(status int) bool {
	return status >= 200 && status != http.StatusNoContent
}

// copyBody copies a response body to the client, chunk-encoded if asked,
// and flushes whenever the backend has nothing more buffered (so that
// streamed responses stream). eof says whether the body ended normally.
func copyBody(dst io.Writer, body io.Reader, backend interface{ Buffered() int }, flush func(), chunked bool) (n int64, eof bool, err error) {
	buf := getBuffer()
	defer putBuffer(buf)
	b := *buf
	for {
		nr, er := body.Read(b)
		if nr > 0 {
			var ew error
			if chunked {
				if _, ew = io.WriteString(dst, strconv.FormatInt(int64(nr), 16)+"\r\n"); ew == nil {
					if _, ew = dst.Write(b[:nr]); ew == nil {
						_, ew = dst.Write(crlf)
					}
				}
			} else {
				_, ew = dst.Write(b[:nr])
			}
			if ew != nil {
				return n, false, ew
			}
			n += int64(nr)
			if er == nil && backend.Buffered() == 0 {
				flush() // the next read waits for the backend: send what we have
			}
		}
		if er == io.EOF {
			if chunked {
				if _, ew := dst.Write(lastChunk); ew != nil {
					return n, false, ew
				}
			}
			return n, true, nil
		}
		if er != nil {
			return n, false, er
		}
	}
}

var (
	crlf      = []byte("\r\n")
	lastChunk = []byte("0\r\n\r\n")
)

// requestURI is the request target sent to the backend.
func requestURI(r *http.Request, rt *route) string {
	if rt.strip {
		u := *r.URL
		stripPrefix(&u, rt.prefix)
		return u.RequestURI()
	}
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI // exactly as the client sent it
	}
	return r.URL.RequestURI() // absolute form, or "*"
}

func clientIP(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	return host
}

func plainError(w http.ResponseWriter, id string, status int, msg string) int64 {
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["X-Request-Id"] = []string{id}
	w.WriteHeader(status)
	n, _ := io.WriteString(w, msg)
	return int64(n)
}

// requestIDBytes is requestID for the HTTP/1 parser's bytes.
func requestIDBytes(in []byte) string {
	if validRequestID(in) {
		return string(in)
	}
	return newRequestID()
}

func validRequestID(in []byte) bool {
	if n := len(in); n == 0 || n > 128 {
		return false
	}
	for _, c := range in {
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// requestID returns the client's X-Request-Id if it is a sane token, else a
// new random one.
func requestID(in string) string {
	if n := len(in); n > 0 && n <= 128 {
		ok := true
		for i := 0; i < n; i++ {
			if c := in[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
				ok = false
				break
			}
		}
		if ok {
			return in
		}
	}
	return newRequestID()
}

func newRequestID() string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := rand.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return hex.EncodeToString(b[:])
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == 443 || port == 0 {
		return host
	}
	return host + ":" + strconv.Itoa(port)
}

// logAccess writes the access log line of a request: no query string, no
// headers, so no secrets.
func (g *Gateway) logAccess(client, proto, method, host, path, id string, rt *route, backend string, status int, n int64, start time.Time) {
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("request_id", id),
		slog.String("client", client),
		slog.String("proto", proto),
		slog.String("method", method),
		slog.String("host", host),
		slog.String("path", path),
	)
	if rt != nil {
		attrs = append(attrs, slog.String("service", rt.service))
	}
	if backend != "" {
		attrs = append(attrs, slog.String("backend", backend))
	}
	attrs = append(attrs,
		slog.Int("status", status),
		slog.Int64("bytes", n),
		slog.Duration("duration", time.Since(start)),
	)
	g.access.LogAttrs(context.Background(), slog.LevelInfo, "http request", attrs...)
}
