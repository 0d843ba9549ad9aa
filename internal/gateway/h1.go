package gateway

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/berth-project/berth/internal/gateway/http1"
)

// The gateway's HTTP/1.x server loop. It uses neither net/http's server nor
// its parser: request heads are read by the gateway's own strict parser
// (http1.ReadRequestHead, checked against net/http by FuzzRequestHead)
// into one reused buffer, and response heads by http1.ReadResponseHead.
// There is no goroutine per request for detecting closed clients and no
// response-writer machinery. It always re-frames bodies (Content-Length or
// chunked, as it decides), so framing ambiguities in a client request cannot
// reach a backend (no request smuggling through the gateway).

// h2Preface starts every HTTP/2 connection with prior knowledge (h2c).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// serveConn serves one entrypoint connection: TLS handshake, then HTTP/1.x
// here or HTTP/2 by the entrypoint's net/http server.
func (g *Gateway) serveConn(ep *entrypoint, c net.Conn) {
	handedOff := false
	raw := c // c becomes the TLS connection
	stop := context.AfterFunc(g.ctx, func() { raw.Close() })
	defer func() {
		stop()
		if !handedOff {
			c.Close()
		}
	}()
	c.SetReadDeadline(time.Now().Add(g.opts.ReadHeaderTimeout))
	if ep.tls {
		tc := tls.Server(c, ep.tlsCfg)
		tc.SetDeadline(time.Now().Add(g.opts.ReadHeaderTimeout))
		if err := tc.HandshakeContext(g.ctx); err != nil {
			g.log.Debug("TLS handshake failed", "entrypoint", ep.name, "client", c.RemoteAddr().String(), "err", err)
			return
		}
		c = tc
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			tc.SetDeadline(time.Time{}) // the HTTP/2 server sets its own
			stop()
			handedOff = ep.h2ln.hand(newH2Guard(tc, tc, g.opts.MaxHeaderBytes))
			return
		}
		// The first request's head gets ReadHeaderTimeout after the
		// handshake, like every later one.
		tc.SetDeadline(time.Time{})
		tc.SetReadDeadline(time.Now().Add(g.opts.ReadHeaderTimeout))
	}
	h := &h1conn{g: g, ep: ep, c: c}
	h.br = bufio.NewReaderSize(c, 4<<10)
	h.dw = deadlineWriter{w: c, set: c.SetWriteDeadline, d: g.opts.WriteTimeout}
	h.bw = bufio.NewWriterSize(&h.dw, 4<<10)
	h.client = c.RemoteAddr().String()
	h.clientIP = []byte(clientIP(h.client))
	if !ep.tls && isH2Preface(h.br) {
		stop()
		c.SetReadDeadline(time.Time{})                                       // the HTTP/2 server sets its own
		handedOff = ep.h2ln.hand(newH2Guard(c, h.br, g.opts.MaxHeaderBytes)) // h.br holds the preface
		return
	}
	h.serve()
}

// isH2Preface reports whether the connection starts with the HTTP/2
// preface. It reads no further than the first byte that differs, so an
// HTTP/1 request shorter than the preface is no problem.
func isH2Preface(br *bufio.Reader) bool {
	for i := 1; i <= len(h2Preface); i++ {
		b, err := br.Peek(i)
		if err != nil || b[i-1] != h2Preface[i-1] {
			return false
		}
	}
	return true
}

// h1conn is one HTTP/1.x client connection.
type h1conn struct {
	g        *Gateway
	ep       *entrypoint
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	dw       deadlineWriter // bw's destination
	client   string         // remote address
	clientIP []byte

	// Per-request state, reused: requests on a connection come one by one.
	req     http1.RequestHead
	ex      exchange
	o       outReq
	body    bodyReader
	hostBuf []byte
	uriBuf  []byte
}

// serve reads and answers requests until the connection ends or must.
func (h *h1conn) serve() {
	g := h.g
	for first := true; ; first = false {
		if !first {
			// Keep-alive: wait for the next request up to IdleTimeout;
			// then, unless the whole head is already here, give it
			// ReadHeaderTimeout.
			h.c.SetReadDeadline(time.Now().Add(g.opts.IdleTimeout))
			if _, err := h.br.Peek(1); err != nil {
				return
			}
			if !headBuffered(h.br) {
				h.c.SetReadDeadline(time.Now().Add(g.opts.ReadHeaderTimeout))
			}
		}
		err := http1.ReadRequestHead(h.br, g.opts.MaxHeaderBytes, &h.req)
		if err != nil {
			var re *http1.RequestError
			if errors.As(err, &re) {
				h.fail(re.Status, strconv.Itoa(re.Status)+" "+http.StatusText(re.Status)+": "+re.Msg+"\n")
			}
			return // I/O errors, timeouts: nothing to answer
		}
		// A body is read under its own deadlines (bodyReader); the head's
		// stays until then. A tunnel has none once it is set up.
		if h.req.Upgrade[1] > 0 && !h.req.HasBody() {
			h.c.SetReadDeadline(time.Time{})
		}
		if !h.handle() {
			return
		}
	}
}

// headBuffered reports whether a whole request head is in br's buffer.
func headBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.Contains(b, []byte("\r\n\r\n")) || bytes.Contains(b, []byte("\n\n"))
}

// fail answers a request the gateway could not read, and the connection
// closes.
func (h *h1conn) fail(status int, msg string) {
	h.dw.d, h.dw.at = time.Second, time.Time{} // the last answer: do not wait for a client that does not read
	h.writeLocal(false, status, "", msg, true)
	h.bw.Flush()
}

// handle answers one request and reports whether the connection may carry
// another.
func (h *h1conn) handle() (keep bool) {
	g := h.g
	r := &h.req
	var start time.Time
	if g.access != nil {
		start = time.Now()
	}
	h.o.body = nil
	if r.HasBody() {
		length := r.ContentLength
		if r.Chunked {
			length = -1
		}
		h.body.init(r.Body, length, h.c.SetReadDeadline, g.opts.BodyTimeout, g.opts.BodyMinRate)
	}
	host := hostOnlyBytes(r.Span(r.Host), &h.hostBuf)
	rt, redirect, b := g.dispatchBytes(host, r.Path, h.ep.tls)
	id := requestIDBytes(r.Span(r.RequestID))
	head := string(r.Span(r.Method)) == http.MethodHead
	closing := r.Close
	status, n, backend := 0, int64(0), ""
	switch {
	case rt == nil:
		status = http.StatusNotFound
		n = h.writeLocal(head, status, id, msgNotFound, closing)
	case redirect:
		status = http.StatusPermanentRedirect
		target := "https://" + joinHostPort(string(host), g.httpsPort) + string(r.OriginTarget())
		n = h.writeRedirect(id, target, closing)
	case b == nil:
		status = http.StatusServiceUnavailable
		n = h.writeLocal(head, status, id, msgUnavailable, closing)
	default:
		ex := &h.ex
		ex.init(rt, b, id)
		status, n, keep = h.proxy(ex)
		closing = closing || !keep
		backend = ex.backend.ID
		ex.backend.inflight.Add(-1)
	}
	if err := h.bw.Flush(); err != nil {
		closing = true
	}
	if !closing && !h.bodyDone() {
		closing = true // an unread body stands between us and the next request
	}
	if g.access != nil {
		proto := "HTTP/1.1"
		if r.Minor == 0 {
			proto = "HTTP/1.0"
		}
		g.logAccess(h.client, proto, r.MethodString(), string(r.Span(r.Host)), string(r.Path), id, rt, backend, status, n, start)
	}
	return !closing
}

// bodyDone reports whether the request body was read to its end, or drains
// a small rest of it (under the body's deadlines: a slow client is not
// waited for).
func (h *h1conn) bodyDone() bool {
	if !h.req.HasBody() || h.body.eof {
		return true
	}
	if h.body.failed.Load() {
		return false
	}
	n, err := io.CopyN(io.Discard, &h.body, 256<<10)
	return err == io.EOF && n < 256<<10
}

// proxy sends the request to its backend and the response to the client.
// It returns the status, the body bytes sent, and whether the client
// connection may carry another request.
func (h *h1conn) proxy(ex *exchange) (int, int64, bool) {
	g := h.g
	r := &h.req
	o := &h.o
	*o = outReq{method: r.MethodString(), uri: h.requestURI(ex.route), host: r.Span(r.Host), head: r,
		clientIP: h.clientIP, tls: h.ep.tls, id: ex.id, upgrade: r.Span(r.Upgrade)}
	if r.HasBody() {
		o.body = &h.body
		if r.Expect100 {
			// The client waits for this before it sends the body. Sent
			// here, not when the body is first read: that may happen on
			// the body writer's goroutine, while this one answers.
			h.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := h.bw.Flush(); err != nil {
				return 0, 0, false
			}
		}
	}
	head := o.method == http.MethodHead
	resp, c, err := g.roundTrip(ex, o)
	if err != nil && o.body != nil && o.body.failed.Load() {
		// The client's body failed, not the backend: say so, and close
		// (the rest of the body cannot be found in the stream).
		g.log.Debug("bad request body", "request_id", ex.id, "service", ex.route.service, "client", h.client, "err", o.body.err)
		status, msg := bodyErrorStatus(o.body.err)
		n := h.writeLocal(head, status, ex.id, msg, true)
		h.finishWriter(o)
		return status, n, false
	}
	if err != nil {
		g.log.Debug("proxy error", "request_id", ex.id, "service", ex.route.service, "backend", ex.backend.ID, "err", err)
		status, msg := errorStatus(err)
		keep := o.writer == nil
		n := h.writeLocal(head, status, ex.id, msg, !keep || r.Close)
		h.finishWriter(o)
		return status, n, keep
	}
	if resp.Status == http.StatusSwitchingProtocols {
		if len(o.upgrade) == 0 {
			g.release(c, false)
			n := h.writeLocal(head, http.StatusBadGateway, ex.id, "502 bad gateway: unexpected upgrade from the backend\n", true)
			return http.StatusBadGateway, n, false
		}
		h.tunnel(resp, c, ex)
		return http.StatusSwitchingProtocols, 0, false
	}

	hsts := h.ep.tls && ex.route.hsts
	chunked := false
	closing := r.Close
	http11 := r.Minor == 1
	w := h.bw
	writeStatusLine(w, resp)
	for _, l := range resp.Lines {
		if l.Skip || hsts && http1.ASCIIEqualFold(resp.Name(l), "Strict-Transport-Security") {
			continue
		}
		w.Write(resp.Name(l))
		w.WriteString(": ")
		w.Write(resp.Value(l))
		w.WriteString("\r\n")
	}
	w.WriteString("X-Request-Id: ")
	w.WriteString(ex.id)
	w.WriteString("\r\n")
	if hsts {
		w.WriteString("Strict-Transport-Security: " + hstsValue + "\r\n")
	}
	switch {
	case resp.NoBody:
		if resp.ContentLength >= 0 && bodyAllowedLength(resp.Status) {
			w.WriteString("Content-Length: ")
			w.WriteString(strconv.FormatInt(resp.ContentLength, 10))
			w.WriteString("\r\n")
		}
	case resp.ContentLength >= 0:
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.FormatInt(resp.ContentLength, 10))
		w.WriteString("\r\n")
	case http11:
		chunked = true
		w.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		closing = true // an HTTP/1.0 client reads to the end
	}
	if closing {
		w.WriteString("Connection: close\r\n")
	} else if !http11 {
		w.WriteString("Connection: keep-alive\r\n")
	}
	w.WriteString("\r\n")

	var n int64
	eof := resp.NoBody
	if !resp.NoBody {
		var cerr error
		n, eof, cerr = copyBody(w, resp.Body, c.br, func() { w.Flush() }, chunked)
		if cerr != nil {
			closing = true // the response is cut short: so is the connection
		}
	}
	writerOK := o.writerDone()
	g.release(c, eof && !resp.Close && writerOK)
	if o.writer != nil {
		closing = true
		h.finishWriter(o)
	}
	return resp.Status, n, !closing
}

// finishWriter waits for a body writer that is still running, after
// closing the client connection (it may be blocked reading it).
func (h *h1conn) finishWriter(o *outReq) {
	if o.writer == nil {
		return
	}
	h.bw.Flush()
	h.c.Close()
	<-o.writer
	o.writer = nil
}

// tunnel sends the 101 answer to the client, then copies bytes both ways
// until either side ends. The backend connection is not reused.
func (h *h1conn) tunnel(resp *http1.ResponseHead, c *bconn, ex *exchange) {
	w := h.bw
	writeStatusLine(w, resp)
	for _, l := range resp.Lines {
		if l.Skip {
			continue
		}
		w.Write(resp.Name(l))
		w.WriteString(": ")
		w.Write(resp.Value(l))
		w.WriteString("\r\n")
	}
	w.WriteString("Connection: Upgrade\r\nUpgrade: ")
	w.Write(resp.Span(resp.Upgrade))
	w.WriteString("\r\nX-Request-Id: ")
	w.WriteString(ex.id)
	w.WriteString("\r\n\r\n")
	if err := w.Flush(); err != nil {
		c.close()
		return
	}
	if c.dline {
		c.c.SetDeadline(time.Time{}) // the route timeout covers the upgrade, not the session
		c.dline = false
	}
	h.c.SetDeadline(time.Time{}) // a session may be quiet for long
	// Bytes already buffered on either side go first.
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := io.Copy(c.c, h.br); err != nil {
			c.close()
			h.c.Close()
			return
		}
		c.c.CloseWrite()
	}()
	if _, err := io.Copy(h.c, c.br); err != nil {
		c.close()
		h.c.Close()
	} else if cw, ok := h.c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	<-done
	c.close()
}

// writeLocal writes one of the gateway's own plain-text answers.
func (h *h1conn) writeLocal(head bool, status int, id, msg string, closing bool) int64 {
	w := h.bw
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(status))
	w.WriteByte(' ')
	w.WriteString(http.StatusText(status))
	w.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: ")
	w.WriteString(strconv.Itoa(len(msg)))
	w.WriteString("\r\n")
	if id != "" {
		w.WriteString("X-Request-Id: ")
		w.WriteString(id)
		w.WriteString("\r\n")
	}
	if closing {
		w.WriteString("Connection: close\r\n")
	} else if h.req.Minor == 0 {
		w.WriteString("Connection: keep-alive\r\n")
	}
	w.WriteString("\r\n")
	if head {
		return 0
	}
	w.WriteString(msg)
	return int64(len(msg))
}

func (h *h1conn) writeRedirect(id, target string, closing bool) int64 {
	w := h.bw
	w.WriteString("HTTP/1.1 308 Permanent Redirect\r\nLocation: ")
	writeHeaderValue(w, target)
	w.WriteString("\r\nContent-Length: 0\r\nX-Request-Id: ")
	w.WriteString(id)
	w.WriteString("\r\n")
	if closing {
		w.WriteString("Connection: close\r\n")
	} else if h.req.Minor == 0 {
		w.WriteString("Connection: keep-alive\r\n")
	}
	w.WriteString("\r\n")
	return 0
}

// requestURI is the request target sent to the backend: the client's, in
// origin form, without the route's prefix if it strips it.
func (h *h1conn) requestURI(rt *route) []byte {
	t := h.req.OriginTarget()
	if !rt.strip || rt.prefix == "/" {
		return t
	}
	rawPath, query := t, []byte(nil)
	if i := bytes.IndexByte(t, '?'); i >= 0 {
		rawPath, query = t[:i], t[i:]
	}
	var rest string
	if prefixMatchBytes(rt.prefix, rawPath) {
		rest = trimSegment(string(rawPath), rt.prefix)
	} else {
		// The prefix was escaped in the raw path: rebuild from the decoded one.
		u := url.URL{Path: trimSegment(string(h.req.Path), rt.prefix)}
		rest = u.EscapedPath()
	}
	h.uriBuf = append(append(h.uriBuf[:0], rest...), query...)
	return h.uriBuf
}

// writeStatusLine writes "HTTP/1.1 <status> <reason>" (the gateway speaks
// HTTP/1.1 to every HTTP/1.x client, as net/http does).
func writeStatusLine(w *bufio.Writer, resp *http1.ResponseHead) {
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(resp.Status))
	w.WriteByte(' ')
	if reason := resp.Span(resp.Reason); len(reason) > 0 {
		w.Write(reason)
	} else {
		w.WriteString(http.StatusText(resp.Status))
	}
	w.WriteString("\r\n")
}

// writeHeaderValue writes v with any CR or LF turned into a space, so a
// backend cannot split the response it sends through the gateway.
func writeHeaderValue(w *bufio.Writer, v string) {
	if strings.ContainsAny(v, "\r\n") {
		v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	w.WriteString(v)
}

// deadlineWriter gives each write to a client a deadline: a client that
// stops reading is cut off after d without progress, however long the
// whole response takes. The deadline is moved only when half of d has
// passed since it was last set (a timer update less per response on a
// busy keep-alive connection), so a stalled write ends after d/2 to d.
type deadlineWriter struct {
	w   io.Writer
	set func(time.Time) error
	d   time.Duration
	at  time.Time // when the deadline was last set
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if now := time.Now(); now.Sub(w.at) >= w.d/2 {
		w.at = now
		w.set(now.Add(w.d))
	}
	return w.w.Write(p)
}
