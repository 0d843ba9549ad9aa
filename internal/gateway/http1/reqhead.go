// Package http1 parses HTTP/1.x request and response heads for the
// gateway: strictly, into one reused buffer, without building an
// http.Request or http.Response. It knows nothing of routes or backends.
package http1

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http/httputil"
)

// An HTTP/1.x request head, parsed by the gateway itself rather than by
// net/http's ReadRequest (which builds a map, a URL and a dozen strings per
// request; here the head is one reused buffer). The parser is strict: it
// accepts a subset of what net/http's server accepts — a fuzz test checks
// that it never accepts what net/http rejects and that the two agree on
// what they both accept — and the gateway re-frames every body it
// forwards, so no framing ambiguity can reach a backend.

// RequestError is a request the gateway answers with an error status and then
// closes the connection.
type RequestError struct {
	Status int
	Msg    string
}

func (e *RequestError) Error() string {
	return fmt.Sprintf("gateway: bad request (%d): %s", e.Status, e.Msg)
}

func badRequest(format string, args ...any) error {
	return &RequestError{Status: 400, Msg: fmt.Sprintf(format, args...)}
}

// RequestHead is a parsed request head and its body reader.
type RequestHead struct {
	buf   []byte
	Lines []HeaderLine

	Method, target, Host [2]int // spans of buf
	Path                 []byte // decoded path, for routing (aliases buf or pathBuf)
	pathBuf              []byte
	lineBuf              []byte // a head line longer than the reader's buffer
	Minor                int    // HTTP/1.minor

	ContentLength int64 // -1: no Content-Length
	Chunked       bool
	Close         bool // the client wants the connection closed after the answer
	Expect100     bool
	Upgrade       [2]int // the Upgrade header, when Connection asks for an upgrade
	RequestID     [2]int

	Body    io.Reader // nil without a body
	limited exactReader
}

// exactReader reads a body of a known length; ending early is an error.
type exactReader struct {
	r io.Reader
	n int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.n {
		p = p[:e.n]
	}
	n, err := e.r.Read(p)
	e.n -= int64(n)
	if err == io.EOF && e.n > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && e.n == 0 {
		err = io.EOF // saves the caller a read
	}
	return n, err
}

// Span returns the bytes of a span of the head (Method, Target, Host,
// RequestID, Upgrade).
func (h *RequestHead) Span(s [2]int) []byte { return h.buf[s[0]:s[1]] }

// Name returns the name of header line l.
func (h *RequestHead) Name(l HeaderLine) []byte { return h.buf[l.name[0]:l.name[1]] }

// Value returns the value of header line l.
func (h *RequestHead) Value(l HeaderLine) []byte { return h.buf[l.value[0]:l.value[1]] }

func (h *RequestHead) add(b []byte) [2]int {
	start := len(h.buf)
	h.buf = append(h.buf, b...)
	return [2]int{start, len(h.buf)}
}

// OriginTarget returns the request target in origin form (path and
// query), or "*".
func (h *RequestHead) OriginTarget() []byte {
	t := h.Span(h.target)
	if t[0] == '/' || t[0] == '*' {
		return t
	}
	rest := t[bytes.IndexByte(t, ':')+3:]
	return rest[bytes.IndexByte(rest, '/'):]
}

// HasBody reports whether the request has a body to read.
func (h *RequestHead) HasBody() bool { return h.Body != nil }

// MethodString returns the method without allocating for the common ones.
func (h *RequestHead) MethodString() string {
	m := h.Span(h.Method)
	for _, k := range [...]string{"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		if string(m) == k {
			return k
		}
	}
	return string(m)
}

// ReadRequestHead reads a request head from br; maxBytes bounds it. A
// *RequestError says what to answer; other errors are I/O errors.
func ReadRequestHead(br *bufio.Reader, maxBytes int, h *RequestHead) error {
	buf, lines, pathBuf, lineBuf := h.buf[:0], h.Lines[:0], h.pathBuf[:0], h.lineBuf[:0]
	*h = RequestHead{buf: buf, Lines: lines, pathBuf: pathBuf, lineBuf: lineBuf, ContentLength: -1}
	budget := maxBytes

	line, err := readHeadLine(br, &budget, &h.lineBuf)
	if err != nil {
		return err
	}
	// method SP request-target SP HTTP/1.x
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp1 <= 0 || sp2 <= sp1+1 {
		return badRequest("malformed request line")
	}
	method, target, version := line[:sp1], line[sp1+1:sp2], line[sp2+1:]
	for _, c := range method {
		if !isTokenByte(c) {
			return badRequest("invalid method")
		}
	}
	switch string(version) {
	case "HTTP/1.1":
		h.Minor = 1
	case "HTTP/1.0":
		h.Minor = 0
	default:
		if len(version) == 8 && bytes.HasPrefix(version, []byte("HTTP/")) && version[6] == '.' &&
			version[5] >= '0' && version[5] <= '9' && version[7] >= '0' && version[7] <= '9' {
			return &RequestError{Status: 505, Msg: "HTTP version not supported"}
		}
		return badRequest("malformed HTTP version")
	}
	for _, c := range target {
		if c <= ' ' || c >= 0x7f {
			return badRequest("invalid character in the request target")
		}
	}
	isConnect := string(method) == "CONNECT"
	h.Method = h.add(method)
	h.target = h.add(target)
	target = h.Span(h.target) // the line's bytes are gone at the next read

	var urlHost [2]int
	haveURLHost := false
	switch {
	case target[0] == '/':
	case string(target) == "*" && string(h.Span(h.Method)) == "OPTIONS":
	case hasPrefixFold(target, "http://") || hasPrefixFold(target, "https://"):
		// Absolute form: the host in it wins over the Host header.
		start := bytes.IndexByte(target, ':') + 3
		rest := target[start:]
		end := bytes.IndexAny(rest, "/?#")
		if end <= 0 || rest[end] != '/' || bytes.IndexByte(rest[:end], '@') >= 0 {
			return badRequest("invalid request target")
		}
		haveURLHost = true
		urlHost = [2]int{h.target[0] + start, h.target[0] + start + end}
	case isConnect:
		return &RequestError{Status: 405, Msg: "the gateway is not a forward proxy"}
	default:
		return badRequest("invalid request target")
	}
	if err := h.setPath(); err != nil {
		return err
	}

	var connClose, connKeepAlive, connUpgrade bool
	var connListed [][2]int
	var cl [2]int
	haveCL, haveTE, haveHost := false, false, false
	var te, expect [2]int
	haveExpect := false
	var upgrade [2]int
	haveUpgrade := false
	for {
		line, err := readHeadLine(br, &budget, &h.lineBuf)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return badRequest("folded header line")
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return badRequest("malformed header line")
		}
		name, value := line[:colon], bytes.Trim(line[colon+1:], " \t")
		for _, c := range name {
			if !isTokenByte(c) {
				return badRequest("invalid header name")
			}
		}
		if !validFieldValue(value) {
			return badRequest("invalid header value")
		}
		l := HeaderLine{name: h.add(name), value: h.add(value)}
		switch {
		case ASCIIEqualFold(name, "Host"):
			l.Skip = true
			if haveHost {
				return badRequest("more than one Host header")
			}
			haveHost, h.Host = true, l.value
		case ASCIIEqualFold(name, "Content-Length"):
			l.Skip = true
			if haveCL && !bytes.Equal(h.Span(cl), value) {
				return badRequest("conflicting Content-Length headers")
			}
			haveCL, cl = true, l.value
		case ASCIIEqualFold(name, "Transfer-Encoding"):
			l.Skip = true
			if haveTE {
				return &RequestError{Status: 501, Msg: "unsupported Transfer-Encoding"}
			}
			haveTE, te = true, l.value
		case ASCIIEqualFold(name, "Connection"):
			l.Skip = true
			for v := value; len(v) > 0; {
				var tok []byte
				tok, v = cutCommaBytes(v)
				switch {
				case ASCIIEqualFold(tok, "close"):
					connClose = true
				case ASCIIEqualFold(tok, "keep-alive"):
					connKeepAlive = true
				case ASCIIEqualFold(tok, "upgrade"):
					connUpgrade = true
				case len(tok) > 0:
					s := h.add(tok)
					connListed = append(connListed, s)
				}
			}
		case ASCIIEqualFold(name, "Expect"):
			l.Skip = true
			haveExpect, expect = true, l.value
		case ASCIIEqualFold(name, "Upgrade"):
			l.Skip = true
			haveUpgrade, upgrade = true, l.value
		case ASCIIEqualFold(name, "X-Request-Id"):
			l.Skip = true
			h.RequestID = l.value
		default:
			l.Skip = skipRequestName(name)
		}
		h.Lines = append(h.Lines, l)
	}
	for i := range h.Lines {
		for _, s := range connListed {
			if ASCIIEqualFold(h.Name(h.Lines[i]), string(h.Span(s))) {
				h.Lines[i].Skip = true
			}
		}
	}

	if !haveHost && h.Minor == 1 {
		return badRequest("missing Host header") // even with an absolute target, as net/http
	}
	if haveURLHost {
		h.Host = urlHost
	}
	if !validHost(h.Span(h.Host)) || !validHost(h.Span(urlHost)) {
		return badRequest("invalid Host header")
	}
	if isConnect {
		return &RequestError{Status: 405, Msg: "the gateway is not a forward proxy"}
	}
	if haveExpect {
		if !ASCIIEqualFold(h.Span(expect), "100-continue") {
			return &RequestError{Status: 417, Msg: "expectation failed"}
		}
		h.Expect100 = h.Minor == 1
	}
	if connUpgrade && haveUpgrade {
		h.Upgrade = upgrade
	}
	if h.Minor == 0 {
		h.Close = !connKeepAlive
	} else {
		h.Close = connClose
	}

	// Framing (RFC 9112, section 6.3). A Content-Length must be valid even
	// beside chunked, where it is ignored (as net/http).
	n := int64(-1)
	if haveCL {
		v := h.Span(cl)
		if len(v) == 0 || len(v) > 18 {
			return badRequest("invalid Content-Length")
		}
		n = 0
		for _, c := range v {
			if c < '0' || c > '9' {
				return badRequest("invalid Content-Length")
			}
			n = n*10 + int64(c-'0')
		}
	}
	switch {
	case haveTE:
		if h.Minor == 0 {
			return badRequest("Transfer-Encoding in an HTTP/1.0 request")
		}
		if !ASCIIEqualFold(h.Span(te), "chunked") {
			return &RequestError{Status: 501, Msg: "unsupported Transfer-Encoding"}
		}
		h.Chunked = true // and any Content-Length is ignored (and not forwarded)
		if haveCL {
			// A message framed two ways may have been read differently by
			// an intermediary before us: answer it, and trust nothing
			// after it on this connection (RFC 9112, section 6.1).
			h.Close = true
		}
		h.Body = &trailerEater{r: httputil.NewChunkedReader(br), br: br}
	case haveCL:
		h.ContentLength = n
		if n > 0 {
			h.limited = exactReader{r: br, n: n}
			h.Body = &h.limited
		}
	}
	return nil
}

// setPath decodes the path of the request target for routing.
func (h *RequestHead) setPath() error {
	t := h.Span(h.target)
	if t[0] != '/' {
		if t[0] == '*' {
			h.Path = t
			return nil
		}
		// Absolute form: the path starts after the authority.
		rest := t[bytes.IndexByte(t, ':')+3:]
		t = rest[bytes.IndexByte(rest, '/'):]
	}
	if i := bytes.IndexAny(t, "?#"); i >= 0 {
		if t[i] == '#' {
			return badRequest("fragment in the request target")
		}
		t = t[:i]
	}
	if bytes.IndexByte(t, '%') < 0 {
		h.Path = t
		return nil
	}
	out := h.pathBuf[:0]
	for i := 0; i < len(t); i++ {
		if t[i] != '%' {
			out = append(out, t[i])
			continue
		}
		if i+2 >= len(t) || !isHex(t[i+1]) || !isHex(t[i+2]) {
			return badRequest("invalid escape in the path")
		}
		out = append(out, unhex(t[i+1])<<4|unhex(t[i+2]))
		i += 2
	}
	h.pathBuf = out
	h.Path = out
	return nil
}

// validFieldValue is httpguts.ValidHeaderFieldValue on bytes: no control
// characters but tab.
func validFieldValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// validHostBytes are the bytes httpguts.ValidHostHeader allows.
var validHostBytes = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!$%&'()*+,-.:;=[]_~" {
		t[c] = true
	}
	return t
}()

func validHost(h []byte) bool {
	for _, c := range h {
		if !validHostBytes[c] {
			return false
		}
	}
	return true
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && ASCIIEqualFold(b[:len(prefix)], prefix)
}

// readHeadLine reads one line of a head, without CRLF, charging it to
// budget. A line longer than br's buffer is put together in *scratch.
func readHeadLine(br *bufio.Reader, budget *int, scratch *[]byte) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		long := append((*scratch)[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(long) > *budget {
				return nil, &RequestError{Status: 431, Msg: "request header fields too large"}
			}
			line, err = br.ReadSlice('\n')
			long = append(long, line...)
		}
		*scratch = long
		line = long
	}
	*budget -= len(line)
	if *budget < 0 {
		return nil, &RequestError{Status: 431, Msg: "request header fields too large"}
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, 0) >= 0 {
		return nil, badRequest("bare CR or NUL in the head")
	}
	return line, nil
}

// skipRequestName reports the client headers not forwarded as they are
// (besides those ReadRequestHead handles itself).
func skipRequestName(name []byte) bool {
	for _, k := range [...]string{"Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"} {
		if ASCIIEqualFold(name, k) {
			return true
		}
	}
	return false
}

func cutCommaBytes(v []byte) (tok, rest []byte) {
	i := bytes.IndexByte(v, ',')
	if i < 0 {
		return bytes.Trim(v, " \t"), nil
	}
	return bytes.Trim(v[:i], " \t"), v[i+1:]
}
