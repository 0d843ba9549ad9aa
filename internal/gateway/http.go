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
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Causes of a proxied request's cancellation.
var (
	errRouteTimeout = errors.New("gateway: route timeout")
	errDrained      = errors.New("gateway: backend drain timeout")
)

// hstsValue is the Strict-Transport-Security header of routes with HSTS.
const hstsValue = "max-age=31536000"

// statusClientClosed is logged for requests the client gave up on (nginx's
// convention); it is never sent.
const statusClientClosed = 499

// entrypoint is the shared HTTP or HTTPS listener.
type entrypoint struct {
	name string
	tls  bool
	ln   *limitListener
	srv  *http.Server
}

func (g *Gateway) listenEntrypoint(name, addr string, isTLS bool) (*entrypoint, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gateway: %s entrypoint: %w", name, err)
	}
	ep := &entrypoint{name: name, tls: isTLS, ln: newLimitListener(ln, g.opts.MaxConns)}
	var protos http.Protocols
	protos.SetHTTP1(true)
	if isTLS {
		protos.SetHTTP2(true)
	} else {
		protos.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	}
	ep.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.serveHTTP(w, r, isTLS) }),
		ReadHeaderTimeout: g.opts.ReadHeaderTimeout,
		IdleTimeout:       g.opts.IdleTimeout,
		MaxHeaderBytes:    g.opts.MaxHeaderBytes,
		Protocols:         &protos,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				g.conns.Add(1) // on the Serve goroutine, counted in g.wg
			case http.StateClosed, http.StateHijacked:
				g.conns.Done()
			}
		},
		ErrorLog:          slog.NewLogLogger(g.log.With("entrypoint", name).Handler(), slog.LevelDebug),
	}
	if isTLS {
		ep.srv.TLSConfig = &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: g.getCertificate,
		}
	}
	return ep, nil
}

func (g *Gateway) serveEntrypoint(ep *entrypoint) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		var err error
		if ep.tls {
			err = ep.srv.ServeTLS(ep.ln, "", "")
		} else {
			err = ep.srv.Serve(ep.ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			g.log.Error("entrypoint stopped", "entrypoint", ep.name, "err", err)
		}
	}()
}

// exchange is the gateway's state of one proxied request. It is reached
// through the request's context by the ReverseProxy hooks, which all run on
// the goroutine of serveHTTP.
type exchange struct {
	route    *route
	backend  *backendState
	tried    []*backendState
	tls      bool
	id       string
	parent   context.Context // the client's
	cancel   context.CancelCauseFunc
	stopKill func() bool
	timer    *time.Timer
	status   int // set for errors the proxy answers itself
	err      error
}

type exchangeKey struct{}

func exchangeOf(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// serveHTTP routes and proxies one request from an entrypoint.
func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request, isTLS bool) {
	// Counted while its connection is, so that a handler that hijacks
	// (a WebSocket) is still waited for by Close.
	g.conns.Add(1)
	defer g.conns.Done()
	var lw *logWriter
	var start time.Time
	if g.access != nil {
		start = time.Now()
		lw = &logWriter{ResponseWriter: w}
		w = lw
	}
	host := hostOnly(r.Host)
	t := g.acquire()
	rt := t.router.match(host, r.URL.Path)
	redirect := rt != nil && rt.redirect && !isTLS
	var b *backendState
	if rt != nil && !redirect {
		b = rt.pool.pick(g.now, nil)
	}
	t.release()

	id := requestID(r.Header.Get("X-Request-Id"))
	var ex *exchange
	if lw != nil {
		defer func() { g.logAccess(r, lw, ex, rt, id, start) }()
	}
	switch {
	case rt == nil:
		plainError(w, id, http.StatusNotFound, "404 page not found: the Berth gateway has no route for this host and path\n")
	case redirect:
		target := "https://" + joinHostPort(host, g.httpsPort) + r.URL.RequestURI()
		w.Header()["X-Request-Id"] = []string{id}
		http.Redirect(w, r, target, http.StatusPermanentRedirect)
	case b == nil:
		plainError(w, id, http.StatusServiceUnavailable, "503 service unavailable: no healthy backend for this route\n")
	default:
		ex = &exchange{route: rt, backend: b, tls: isTLS, id: id, parent: r.Context()}
		g.proxyTo(w, r, ex)
	}
}

// proxyTo proxies r to ex.backend (or, if it refuses, to others). The
// deferred release runs even when ReverseProxy aborts the handler with a
// panic.
func (g *Gateway) proxyTo(w http.ResponseWriter, r *http.Request, ex *exchange) {
	ctx, cancel := context.WithCancelCause(r.Context())
	ex.cancel = cancel
	ex.stopKill = context.AfterFunc(ex.backend.kill, func() { cancel(errDrained) })
	if d := ex.route.timeout; d > 0 {
		ex.timer = time.AfterFunc(d, func() { cancel(errRouteTimeout) })
	}
	defer func() {
		if ex.timer != nil {
			ex.timer.Stop()
		}
		ex.stopKill()
		cancel(nil)
		ex.backend.inflight.Add(-1)
	}()
	g.proxy.ServeHTTP(w, r.WithContext(context.WithValue(ctx, exchangeKey{}, ex)))
}

// rewrite is the ReverseProxy's Rewrite hook.
func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	ex := exchangeOf(pr.In.Context())
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = ex.backend.Addr
	if ex.route.strip {
		stripPrefix(pr.Out.URL, ex.route.prefix)
	}
	// Rewrite dropped the client's X-Forwarded-* headers: the client is
	// not trusted to say where it comes from.
	pr.SetXForwarded()
	pr.Out.Header["X-Request-Id"] = []string{ex.id}
}

// modifyResponse is the ReverseProxy's ModifyResponse hook.
func (g *Gateway) modifyResponse(res *http.Response) error {
	ex := exchangeOf(res.Request.Context())
	if ex == nil {
		return nil
	}
	res.Header["X-Request-Id"] = []string{ex.id}
	if ex.tls && ex.route.hsts {
		res.Header["Strict-Transport-Security"] = []string{hstsValue}
	}
	return nil
}

// proxyError is the ReverseProxy's ErrorHandler: the backend gave no
// response.
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeOf(r.Context())
	ex.err = err
	status, msg := http.StatusBadGateway, "502 bad gateway: the backend did not answer\n"
	switch cause := context.Cause(r.Context()); {
	case ex.parent.Err() != nil:
		ex.status = statusClientClosed
		return // nobody to answer
	case errors.Is(cause, errRouteTimeout):
		status, msg = http.StatusGatewayTimeout, "504 gateway timeout: the backend did not answer in time\n"
	case errors.Is(cause, errDrained):
		msg = "502 bad gateway: the backend was stopped\n"
	}
	ex.status = status
	g.log.Debug("proxy error", "request_id", ex.id, "service", ex.route.service, "backend", ex.backend.ID, "err", err)
	plainError(w, ex.id, status, msg)
}

func plainError(w http.ResponseWriter, id string, status int, msg string) {
	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["X-Request-Id"] = []string{id}
	w.WriteHeader(status)
	io.WriteString(w, msg)
}

// retryTransport sends a request to its exchange's backend; when the backend
// cannot be connected to (the request never reached it) it ejects the backend
// and tries another.
type retryTransport struct {
	g    *Gateway
	base *http.Transport
}

// RoundTrip implements http.RoundTripper.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := exchangeOf(req.Context())
	if ex == nil {
		return t.base.RoundTrip(req)
	}
	var body *replayBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &replayBody{rc: req.Body}
		req = shallowWithBody(req, body)
	}
	for attempt := 1; ; attempt++ {
		resp, err := t.base.RoundTrip(req)
		if err == nil {
			ex.backend.succeeded()
			if resp.StatusCode == http.StatusSwitchingProtocols && ex.timer != nil {
				ex.timer.Stop() // the route timeout covers the upgrade, not the session
			}
			return resp, nil
		}
		var de *dialError
		if !errors.As(err, &de) {
			return nil, err
		}
		t.g.ejectBackend(ex.backend, err)
		if attempt >= maxAttempts || (body != nil && body.used.Load()) || req.Context().Err() != nil {
			return nil, err
		}
		ex.tried = append(ex.tried, ex.backend)
		next := t.g.repick(ex)
		if next == nil {
			return nil, err
		}
		ex.stopKill()
		ex.backend.inflight.Add(-1)
		ex.backend = next
		cancel := ex.cancel
		ex.stopKill = context.AfterFunc(next.kill, func() { cancel(errDrained) })
		req = req.Clone(req.Context())
		req.URL.Host = next.Addr
		if body != nil {
			req.Body = body
		}
	}
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

func shallowWithBody(req *http.Request, body io.ReadCloser) *http.Request {
	r2 := req.WithContext(req.Context()) // a shallow copy
	r2.Body = body
	return r2
}

// replayBody lends a request body to the transport without letting it close
// it, and tells whether it was read: an unread body can go to another
// backend.
type replayBody struct {
	rc   io.ReadCloser
	used atomic.Bool
}

func (b *replayBody) Read(p []byte) (int, error) {
	if !b.used.Load() {
		b.used.Store(true)
	}
	return b.rc.Read(p)
}

// Close does nothing: the server closes the request body.
func (b *replayBody) Close() error { return nil }

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

// logWriter records what was sent, for the access log. Unwrap lets
// ReverseProxy reach the underlying writer's Flush and Hijack.
type logWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *logWriter) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logAccess writes the access log line of a request: no query string, no
// headers, so no secrets.
func (g *Gateway) logAccess(r *http.Request, lw *logWriter, ex *exchange, rt *route, id string, start time.Time) {
	status := lw.status
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("request_id", id),
		slog.String("client", r.RemoteAddr),
		slog.String("proto", r.Proto),
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("path", r.URL.Path),
	)
	if rt != nil {
		attrs = append(attrs, slog.String("service", rt.service))
	}
	if ex != nil {
		attrs = append(attrs, slog.String("backend", ex.backend.ID), slog.Int("attempts", len(ex.tried)+1))
		if ex.status == statusClientClosed {
			status = statusClientClosed
		}
	}
	attrs = append(attrs,
		slog.Int("status", status),
		slog.Int64("bytes", lw.bytes),
		slog.Duration("duration", time.Since(start)),
	)
	g.access.LogAttrs(context.Background(), slog.LevelInfo, "http request", attrs...)
}

// bufferPool lends ReverseProxy its copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
