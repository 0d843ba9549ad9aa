package gateway

import (
	"encoding/binary"
	"io"
	"net"

	"golang.org/x/net/http2/hpack"
)

// h2guard sits between an HTTP/2 client and net/http's HTTP/2 server and
// rewrites the two things in what the client sends on which that server
// departs from RFC 9113 (found by h2spec):
//
//   - A request with a connection-specific header (Connection, Keep-Alive,
//     Proxy-Connection, Transfer-Encoding, Upgrade, or TE other than
//     "trailers") is malformed and must get a stream error of type
//     PROTOCOL_ERROR (section 8.2.2); the server answers it 400. The guard
//     decodes every request's header block beside the server (an HPACK
//     decoder of the same size, so that both see the same dynamic table) and,
//     for such a request, adds one CONTINUATION frame holding a field the
//     server refuses as a stream error (an upper-case name, literal and not
//     indexed, so the dynamic tables stay in step).
//   - A SETTINGS frame may name one setting twice, the values to be applied
//     in order (section 6.5.3); the server ends the connection. The guard
//     keeps the last value of each (which is what applying them in order
//     leaves), or the first invalid one (so that the error is the same).
//
// Everything else passes through as it is: DATA frames unbuffered, and the
// rest of the connection untouched if the guard cannot follow it (a header
// block it cannot decode is the server's to refuse).
type h2guard struct {
	net.Conn
	r io.Reader // the client's bytes (the connection, or what buffers it)

	buf  []byte // holds in
	in   []byte // read from r, not yet passed on
	out  []byte // ready for the server
	pass int    // bytes of in (or r) to pass on unread: the preface, payloads
	err  error  // a read error to return once out is empty

	dec       *hpack.Decoder
	off       bool   // header blocks are no longer followed
	maxStream uint32 // the highest stream a request opened
	check     bool   // the block being read opens a request
	bad       bool   // it has a connection-specific field
	te        int    // TE fields in it
	scratch   []byte
}

// Frame types and flags of RFC 9113 used here.
const (
	h2FrameHeaders      = 0x1
	h2FrameSettings     = 0x4
	h2FrameContinuation = 0x9
	h2FlagAck           = 0x1
	h2FlagEndHeaders    = 0x4
	h2FlagPadded        = 0x8
	h2FlagPriority      = 0x20
	// h2MaxFrame is the largest frame the guard reads whole: the server's
	// SETTINGS_MAX_FRAME_SIZE. A larger one is a FRAME_SIZE_ERROR for the
	// server to find.
	h2MaxFrame = 16 << 10
	// h2HeaderTableSize is the HPACK dynamic table size of net/http's
	// server (its default; the gateway does not change it).
	h2HeaderTableSize = 4096
)

// h2Malformed is the field the guard adds to a malformed request: a
// literal without indexing (0x00) with a new name that is invalid in HTTP/2
// (upper case) and an empty value.
var h2Malformed = func() []byte {
	const name = "Berth-Connection-Specific-Field"
	return append(append([]byte{0x00, byte(len(name))}, name...), 0x00)
}()

func newH2Guard(c net.Conn, r io.Reader, maxHeaderBytes int) *h2guard {
	g := &h2guard{Conn: c, r: r, pass: len(h2Preface)}
	g.dec = hpack.NewDecoder(h2HeaderTableSize, g.field)
	// As the server's decoder, which stops at strings this long.
	g.dec.SetMaxStringLength(maxHeaderBytes + 10*32)
	return g
}

func (g *h2guard) Read(p []byte) (int, error) {
	for len(g.out) == 0 {
		if g.err != nil {
			err := g.err
			g.err = nil
			return 0, err
		}
		if g.pass > 0 {
			if len(g.in) > 0 {
				n := copy(p[:min(len(p), g.pass)], g.in)
				g.in, g.pass = g.in[n:], g.pass-n
				return n, nil
			}
			n, err := g.r.Read(p[:min(len(p), g.pass)])
			g.pass -= n
			return n, err
		}
		g.next()
	}
	n := copy(p, g.out)
	g.out = g.out[n:]
	return n, nil
}

// fill reads until in holds n bytes (only while out is empty: in may move
// within buf). On an error, what was read is passed on as it is, and the
// error after it.
func (g *h2guard) fill(n int) bool {
	if len(g.in) >= n {
		return true
	}
	if cap(g.in) < n {
		if len(g.buf) < n {
			g.buf = make([]byte, max(n, 4<<10))
		}
		g.in = g.buf[:copy(g.buf, g.in)]
	}
	for len(g.in) < n {
		m, err := g.r.Read(g.in[len(g.in):cap(g.in)])
		g.in = g.in[:len(g.in)+m]
		if err != nil && len(g.in) < n {
			g.out, g.in, g.err = g.in, g.in[len(g.in):], err
			return false
		}
	}
	return true
}

// next puts the next frame (or its header, when its payload passes on
// unread) in out.
func (g *h2guard) next() {
	if !g.fill(9) {
		return
	}
	h := g.in[:9]
	length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	typ, flags := h[3], h[4]
	stream := binary.BigEndian.Uint32(h[5:9]) & (1<<31 - 1)
	inspect := length <= h2MaxFrame &&
		(typ == h2FrameSettings && flags&h2FlagAck == 0 && length%6 == 0 ||
			(typ == h2FrameHeaders || typ == h2FrameContinuation) && !g.off)
	if !inspect {
		if typ == h2FrameHeaders || typ == h2FrameContinuation {
			g.off = true // a block the decoder does not see: stop following
		}
		g.out, g.in, g.pass = h, g.in[9:], length
		return
	}
	if !g.fill(9 + length) {
		return
	}
	frame := g.in[:9+length]
	g.in = g.in[9+length:]
	g.out = frame
	switch typ {
	case h2FrameSettings:
		g.out = g.settings(frame)
	case h2FrameHeaders, h2FrameContinuation:
		g.out = g.headers(frame, typ, flags, stream)
	}
}

// settings returns frame with each setting named once: its first invalid
// value if it has one (the server's error is then the same), else its last.
func (g *h2guard) settings(frame []byte) []byte {
	payload := frame[9:]
	n := len(payload) / 6
	if n > 100 {
		return frame // the server refuses so many
	}
	setting := func(i int) (uint16, uint32) {
		return binary.BigEndian.Uint16(payload[6*i:]), binary.BigEndian.Uint32(payload[6*i+2:])
	}
	chosen := func(id uint16) int {
		c := -1
		for j := 0; j < n; j++ {
			if jd, v := setting(j); jd == id {
				if !validSetting(id, v) {
					return j
				}
				c = j
			}
		}
		return c
	}
	dup := false
	for i := 0; i < n; i++ {
		if id, _ := setting(i); chosen(id) != i {
			dup = true
			break
		}
	}
	if !dup {
		return frame
	}
	out := append(g.scratch[:0], frame[:9]...)
	for i := 0; i < n; i++ {
		if id, _ := setting(i); chosen(id) == i {
			out = append(out, payload[6*i:6*i+6]...)
		}
	}
	l := len(out) - 9
	out[0], out[1], out[2] = byte(l>>16), byte(l>>8), byte(l)
	g.scratch = out
	return out
}

// validSetting reports whether a value is allowed for a setting (RFC 9113,
// section 6.5.2; RFC 8441).
func validSetting(id uint16, v uint32) bool {
	switch id {
	case 0x2, 0x8: // ENABLE_PUSH, ENABLE_CONNECT_PROTOCOL
		return v <= 1
	case 0x4: // INITIAL_WINDOW_SIZE
		return v <= 1<<31-1
	case 0x5: // MAX_FRAME_SIZE
		return v >= 1<<14 && v <= 1<<24-1
	}
	return true
}

// headers follows one frame of a header block, and returns it with the
// malformed-request field after it if the block ends and opens a malformed
// request.
func (g *h2guard) headers(frame []byte, typ, flags byte, stream uint32) []byte {
	frag := frame[9:]
	if typ == h2FrameHeaders {
		// A new stream is a request; a HEADERS frame on an open one
		// carries trailers, which net/http's server checks itself.
		g.check = stream > g.maxStream
		if g.check {
			g.maxStream = stream
		}
		g.bad, g.te = false, 0
		if flags&h2FlagPadded != 0 {
			if len(frag) < 1 || int(frag[0]) > len(frag)-1 {
				g.off = true
				return frame
			}
			frag = frag[1 : len(frag)-int(frag[0])]
		}
		if flags&h2FlagPriority != 0 {
			if len(frag) < 5 {
				g.off = true
				return frame
			}
			frag = frag[5:]
		}
	}
	if _, err := g.dec.Write(frag); err != nil {
		g.off = true
		return frame
	}
	if flags&h2FlagEndHeaders == 0 {
		return frame
	}
	if err := g.dec.Close(); err != nil {
		g.off = true
		return frame
	}
	if !g.check || !g.bad && g.te <= 1 {
		return frame
	}
	// The block ends in a CONTINUATION frame of ours.
	out := append(g.scratch[:0], frame...)
	out[4] &^= h2FlagEndHeaders
	l := len(h2Malformed)
	out = append(out, byte(l>>16), byte(l>>8), byte(l), h2FrameContinuation, h2FlagEndHeaders)
	out = binary.BigEndian.AppendUint32(out, stream)
	out = append(out, h2Malformed...)
	g.scratch = out
	return out
}

// field notes a connection-specific field of a request (as net/http's
// server checks them, on the wire names, which are lower case).
func (g *h2guard) field(f hpack.HeaderField) {
	if !g.check {
		return
	}
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		g.bad = true
	case "te":
		g.te++
		if f.Value != "trailers" && f.Value != "" {
			g.bad = true
		}
	}
}
