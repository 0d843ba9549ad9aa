package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
)

// A backend's response head, parsed without building an http.Response:
// the header lines are kept as they came (in one buffer reused by the
// connection) and written to the client as they are, minus hop-by-hop ones.
// The framing rules are RFC 9112's, and strict: anything ambiguous is an
// error (502), never a guess.

// Limits of a response head.
const (
	maxRespHeaderLines = 256
	maxRespHeadBytes   = 64 << 10
)

var (
	errBadResponse = errors.New("gateway: malformed response from backend")
	errBadTrailer  = errors.New("gateway: malformed chunked trailer")
)

// hdrLine is one header line: name and value as spans of respHead.buf.
type hdrLine struct {
	name, value [2]int
	skip        bool // hop-by-hop or framing: not passed on
}

// respHead is a parsed response head and its body reader.
type respHead struct {
	buf   []byte
	lines []hdrLine

	major, minor int
	status       int
	reason       [2]int

	contentLength int64 // -1: not given
	chunked       bool
	close         bool // the backend closes the connection after the body
	noBody        bool
	upgrade       [2]int // the Upgrade header's value, for a 101

	body    io.Reader // nil when noBody
	limited exactReader
}

func (h *respHead) name(l hdrLine) []byte  { return h.buf[l.name[0]:l.name[1]] }
func (h *respHead) value(l hdrLine) []byte { return h.buf[l.value[0]:l.value[1]] }
func (h *respHead) span(s [2]int) []byte   { return h.buf[s[0]:s[1]] }

// reset readies h for another response, keeping its buffers.
func (h *respHead) reset() {
	buf, lines := h.buf[:0], h.lines[:0]
	*h = respHead{buf: buf, lines: lines, contentLength: -1}
}

// readRespHead reads a response head from br (skipping 1xx other than
// 101) for a request with method. h is reset first.
func readRespHead(br *bufio.Reader, method string, h *respHead) error {
	for {
		h.reset()
		if err := h.read(br, method); err != nil {
			return err
		}
		if h.status >= 200 || h.status == http.StatusSwitchingProtocols {
			return nil
		}
		// 100 Continue, 103 Early Hints: the final answer follows.
	}
}

func (h *respHead) read(br *bufio.Reader, method string) error {
	line, err := readLine(br)
	if err != nil {
		return err
	}
	// HTTP/1.x SP 3DIGIT [SP reason]
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' ||
		line[7] < '0' || line[7] > '9' || (len(line) > 12 && line[12] != ' ') {
		return fmt.Errorf("%w: status line %q", errBadResponse, truncateBytes(line))
	}
	h.major, h.minor = 1, int(line[7]-'0')
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return fmt.Errorf("%w: status line %q", errBadResponse, truncateBytes(line))
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return fmt.Errorf("%w: status %d", errBadResponse, code)
	}
	h.status = code
	if len(line) > 13 {
		h.reason = h.add(line[13:])
	}

	var connClose, connKeepAlive bool
	var connListed [][]byte
	var te []byte
	haveTE := false
	for {
		line, err := readLine(br)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			break
		}
		if len(h.lines) >= maxRespHeaderLines || len(h.buf) > maxRespHeadBytes {
			return fmt.Errorf("%w: response head too large", errBadResponse)
		}
		if line[0] == ' ' || line[0] == '\t' {
			return fmt.Errorf("%w: folded header line", errBadResponse)
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return fmt.Errorf("%w: header line %q", errBadResponse, truncateBytes(line))
		}
		name, value := line[:colon], bytes.Trim(line[colon+1:], " \t")
		for _, c := range name {
			if !isTokenByte(c) {
				return fmt.Errorf("%w: header name %q", errBadResponse, truncateBytes(name))
			}
		}
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return fmt.Errorf("%w: control character in header %q", errBadResponse, truncateBytes(name))
			}
		}
		l := hdrLine{name: h.add(name), value: h.add(value)}
		switch {
		case asciiEqualFold(name, "Content-Length"):
			l.skip = true
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || (h.contentLength >= 0 && n != h.contentLength) {
				return fmt.Errorf("%w: Content-Length %q", errBadResponse, truncateBytes(value))
			}
			h.contentLength = n
		case asciiEqualFold(name, "Transfer-Encoding"):
			l.skip = true
			if haveTE {
				return fmt.Errorf("%w: more than one Transfer-Encoding", errBadResponse)
			}
			haveTE, te = true, value
		case asciiEqualFold(name, "Connection"):
			l.skip = true
			for _, tok := range bytes.Split(value, []byte(",")) {
				tok = bytes.Trim(tok, " \t")
				switch {
				case asciiEqualFold(tok, "close"):
					connClose = true
				case asciiEqualFold(tok, "keep-alive"):
					connKeepAlive = true
				case len(tok) > 0:
					connListed = append(connListed, tok)
				}
			}
		case asciiEqualFold(name, "Upgrade"):
			l.skip = true
			h.upgrade = l.value
		default:
			l.skip = skipResponseName(name)
		}
		h.lines = append(h.lines, l)
	}
	for i := range h.lines {
		for _, tok := range connListed {
			if asciiEqualFold(h.name(h.lines[i]), string(tok)) {
				h.lines[i].skip = true
			}
		}
	}

	// Framing (RFC 9112, section 6.3).
	if h.minor == 0 {
		h.close = !connKeepAlive
		haveTE = false // HTTP/1.0 has no transfer codings (as net/http)
	} else {
		h.close = connClose
	}
	if haveTE && !asciiEqualFold(te, "chunked") {
		return fmt.Errorf("%w: Transfer-Encoding %q", errBadResponse, truncateBytes(te))
	}
	switch {
	case method == http.MethodHead || !bodyAllowed(h.status):
		h.noBody = true
	case haveTE:
		h.chunked = true
		h.contentLength = -1 // chunked wins over a length
		h.body = &trailerEater{r: httputil.NewChunkedReader(br), br: br}
	case h.contentLength >= 0:
		h.limited = exactReader{r: br, n: h.contentLength}
		h.body = &h.limited
	default:
		h.close = true // the body ends when the backend closes
		h.body = br
	}
	if h.contentLength == 0 && !h.chunked {
		h.body = eofReader{}
	}
	return nil
}

// add copies b into h.buf and returns its span.
func (h *respHead) add(b []byte) [2]int {
	start := len(h.buf)
	h.buf = append(h.buf, b...)
	return [2]int{start, len(h.buf)}
}

// skipResponseName reports the backend headers not passed on as they are.
func skipResponseName(name []byte) bool {
	for _, k := range [...]string{"Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "X-Request-Id"} {
		if asciiEqualFold(name, k) {
			return true
		}
	}
	return false
}

// readLine returns a line without its CRLF (or LF). The slice is valid
// until the next read from br.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: header line too long", errBadResponse)
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, fmt.Errorf("%w: bare CR", errBadResponse)
	}
	return line, nil
}

// trailerEater reads a chunked body and then the trailer section after it,
// so that the connection is at the next response. Trailers are dropped.
type trailerEater struct {
	r    io.Reader
	br   *bufio.Reader
	done bool
}

func (t *trailerEater) Read(p []byte) (int, error) {
	if t.done {
		return 0, io.EOF
	}
	n, err := t.r.Read(p)
	if err == io.EOF {
		for {
			raw, lerr := t.br.ReadSlice('\n')
			if lerr != nil {
				if lerr == io.EOF {
					lerr = io.ErrUnexpectedEOF
				}
				return n, lerr
			}
			if string(raw) == "\r\n" {
				break // the end, strictly CRLF (as net/http)
			}
			// A field line: a name, a colon, CRLF at the end only.
			if len(raw) < 3 || raw[len(raw)-2] != '\r' || bytes.IndexByte(raw[:len(raw)-2], '\r') >= 0 ||
				bytes.IndexByte(raw, ':') <= 0 {
				return n, errBadTrailer
			}
		}
		t.done = true
	}
	return n, err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// tokenBytes are the bytes of an RFC 9110 token (a header name).
var tokenBytes = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isTokenByte(c byte) bool { return tokenBytes[c] }

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func truncateBytes(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}
