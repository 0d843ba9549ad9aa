package http1

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

// HeaderLine is one header line: name and value as spans of ResponseHead.buf.
type HeaderLine struct {
	name, value [2]int
	Skip        bool // hop-by-hop or framing: not passed on
}

// ResponseHead is a parsed response head and its body reader.
type ResponseHead struct {
	buf   []byte
	Lines []HeaderLine

	major, minor int
	Status       int
	Reason       [2]int

	ContentLength int64 // -1: not given
	chunked       bool
	Close         bool // the backend closes the connection after the body
	NoBody        bool
	Upgrade       [2]int // the Upgrade header's value, for a 101

	Body    io.Reader // nil when noBody
	limited exactReader
}

// Name returns the name of header line l.
func (h *ResponseHead) Name(l HeaderLine) []byte { return h.buf[l.name[0]:l.name[1]] }

// Value returns the value of header line l.
func (h *ResponseHead) Value(l HeaderLine) []byte { return h.buf[l.value[0]:l.value[1]] }

// Span returns the bytes of a span of the head (Reason, Upgrade).
func (h *ResponseHead) Span(s [2]int) []byte { return h.buf[s[0]:s[1]] }

// reset readies h for another response, keeping its buffers.
func (h *ResponseHead) reset() {
	buf, lines := h.buf[:0], h.Lines[:0]
	*h = ResponseHead{buf: buf, Lines: lines, ContentLength: -1}
}

// ReadResponseHead reads a response head from br (skipping 1xx other than
// 101) for a request with method. h is reset first.
func ReadResponseHead(br *bufio.Reader, method string, h *ResponseHead) error {
	for {
		h.reset()
		if err := h.read(br, method); err != nil {
			return err
		}
		if h.Status >= 200 || h.Status == http.StatusSwitchingProtocols {
			return nil
		}
		// 100 Continue, 103 Early Hints: the final answer follows.
	}
}

func (h *ResponseHead) read(br *bufio.Reader, method string) error {
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
	h.Status = code
	if len(line) > 13 {
		h.Reason = h.add(line[13:])
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
		if len(h.Lines) >= maxRespHeaderLines || len(h.buf) > maxRespHeadBytes {
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
		l := HeaderLine{name: h.add(name), value: h.add(value)}
		switch {
		case ASCIIEqualFold(name, "Content-Length"):
			l.Skip = true
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || (h.ContentLength >= 0 && n != h.ContentLength) {
				return fmt.Errorf("%w: Content-Length %q", errBadResponse, truncateBytes(value))
			}
			h.ContentLength = n
		case ASCIIEqualFold(name, "Transfer-Encoding"):
			l.Skip = true
			if haveTE {
				return fmt.Errorf("%w: more than one Transfer-Encoding", errBadResponse)
			}
			haveTE, te = true, value
		case ASCIIEqualFold(name, "Connection"):
			l.Skip = true
			for _, tok := range bytes.Split(value, []byte(",")) {
				tok = bytes.Trim(tok, " \t")
				switch {
				case ASCIIEqualFold(tok, "close"):
					connClose = true
				case ASCIIEqualFold(tok, "keep-alive"):
					connKeepAlive = true
				case len(tok) > 0:
					connListed = append(connListed, tok)
				}
			}
		case ASCIIEqualFold(name, "Upgrade"):
			l.Skip = true
			h.Upgrade = l.value
		default:
			l.Skip = skipResponseName(name)
		}
		h.Lines = append(h.Lines, l)
	}
	for i := range h.Lines {
		for _, tok := range connListed {
			if ASCIIEqualFold(h.Name(h.Lines[i]), string(tok)) {
				h.Lines[i].Skip = true
			}
		}
	}

	// Framing (RFC 9112, section 6.3).
	if h.minor == 0 {
		h.Close = !connKeepAlive
		haveTE = false // HTTP/1.0 has no transfer codings (as net/http)
	} else {
		h.Close = connClose
	}
	if haveTE && !ASCIIEqualFold(te, "chunked") {
		return fmt.Errorf("%w: Transfer-Encoding %q", errBadResponse, truncateBytes(te))
	}
	switch {
	case method == http.MethodHead || !bodyAllowed(h.Status):
		h.NoBody = true
	case haveTE:
		h.chunked = true
		h.ContentLength = -1 // chunked wins over a length
		h.Body = &trailerEater{r: httputil.NewChunkedReader(br), br: br}
	case h.ContentLength >= 0:
		h.limited = exactReader{r: br, n: h.ContentLength}
		h.Body = &h.limited
	default:
		h.Close = true // the body ends when the backend closes
		h.Body = br
	}
	if h.ContentLength == 0 && !h.chunked {
		h.Body = eofReader{}
	}
	return nil
}

// add copies b into h.buf and returns its span.
func (h *ResponseHead) add(b []byte) [2]int {
	start := len(h.buf)
	h.buf = append(h.buf, b...)
	return [2]int{start, len(h.buf)}
}

// skipResponseName reports the backend headers not passed on as they are.
func skipResponseName(name []byte) bool {
	for _, k := range [...]string{"Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "X-Request-Id"} {
		if ASCIIEqualFold(name, k) {
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

// ASCIIEqualFold reports whether b equals s, ignoring ASCII case.
func ASCIIEqualFold(b []byte, s string) bool {
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

// bodyAllowed reports whether a response with status may have a body.
func bodyAllowed(status int) bool {
	return !(status >= 100 && status < 200 || status == http.StatusNoContent || status == http.StatusNotModified)
}
