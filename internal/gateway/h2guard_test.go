package gateway

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Raw is a raw HTTP/2 client connection (h2c, prior knowledge) to the
// gateway, speaking frames.
type h2Raw struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialH2Raw(t *testing.T, g *Gateway, settings ...http2.Setting) *h2Raw {
	t.Helper()
	c, err := net.Dial("tcp", g.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	h := &h2Raw{t: t, c: c, fr: http2.NewFramer(c, c)}
	h.enc = hpack.NewEncoder(&h.buf)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return h
}

// request sends a GET on stream id with the extra fields (indexed in the
// dynamic table, so that later requests depend on it).
func (h *h2Raw) request(id uint32, extra ...string) {
	h.t.Helper()
	h.buf.Reset()
	fields := append([]string{":method", "GET", ":scheme", "http", ":authority", "a.test", ":path", "/"}, extra...)
	for i := 0; i+1 < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.buf.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		h.t.Fatal(err)
	}
}

// await reads frames until one for which done returns true; it acks the
// server's settings and fails on GOAWAY.
func (h *h2Raw) await(what string, done func(http2.Frame) bool) {
	h.t.Helper()
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("waiting for %s: %v", what, err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			h.fr.WriteSettingsAck()
		}
		if done(f) {
			return
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			h.t.Fatalf("waiting for %s: GOAWAY %v", what, ga.ErrCode)
		}
	}
}

// TestH2ConnectionSpecificHeaders: a request with a connection-specific
// header, or TE other than "trailers", is malformed (RFC 9113, section
// 8.2.2): a stream error PROTOCOL_ERROR, not a 400 answer. The connection
// goes on, and its header compression with it.
func TestH2ConnectionSpecificHeaders(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	a := httpBackend(t, "a")
	mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Path: "/", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}})
	h := dialH2Raw(t, g)
	ok := func(id uint32) {
		t.Helper()
		h.await("the answer on stream "+string(rune('0'+id)), func(f http2.Frame) bool {
			if r, ok := f.(*http2.RSTStreamFrame); ok && r.StreamID == id {
				t.Fatalf("stream %d reset: %v", id, r.ErrCode)
			}
			m, ok := f.(*http2.MetaHeadersFrame)
			if ok && m.StreamID == id {
				if s := m.PseudoValue("status"); s != "200" {
					t.Fatalf("stream %d: status %s, want 200", id, s)
				}
				return true
			}
			return false
		})
	}
	reset := func(id uint32) {
		t.Helper()
		h.await("RST_STREAM on stream "+string(rune('0'+id)), func(f http2.Frame) bool {
			if m, ok := f.(*http2.MetaHeadersFrame); ok && m.StreamID == id {
				t.Fatalf("stream %d answered %s, want RST_STREAM PROTOCOL_ERROR", id, m.PseudoValue("status"))
			}
			r, ok := f.(*http2.RSTStreamFrame)
			if ok && r.StreamID == id {
				if r.ErrCode != http2.ErrCodeProtocol {
					t.Fatalf("stream %d reset with %v, want PROTOCOL_ERROR", id, r.ErrCode)
				}
				return true
			}
			return false
		})
	}
	h.request(1, "x-seen", "one")
	ok(1)
	h.request(3, "connection", "keep-alive", "x-seen", "two")
	reset(3)
	h.request(5, "te", "gzip")
	reset(5)
	h.request(7, "te", "trailers", "x-seen", "two") // x-seen: two from the table
	ok(7)
	h.request(9, "upgrade", "websocket")
	reset(9)
	h.request(11, "x-seen", "one")
	ok(11)
}

// TestH2DuplicateSettings: a SETTINGS frame that names a setting twice is
// applied in order (RFC 9113, section 6.5.3), not a connection error: with
// INITIAL_WINDOW_SIZE 100 then 1, the answer comes 1 byte at a time.
func TestH2DuplicateSettings(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	a := httpBackend(t, "a")
	mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Path: "/", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}})
	h := dialH2Raw(t, g, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
	h.await("the SETTINGS ack", func(f http2.Frame) bool {
		s, ok := f.(*http2.SettingsFrame)
		return ok && s.IsAck()
	})
	h.request(1)
	h.await("the first DATA frame", func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		if ok && len(d.Data()) != 1 {
			t.Fatalf("DATA frame of %d bytes, want 1 (the last INITIAL_WINDOW_SIZE)", len(d.Data()))
		}
		return ok
	})
	// An invalid value among duplicates is still an error.
	h2 := dialH2Raw(t, g, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 14})
	for {
		f, err := h2.fr.ReadFrame()
		if err != nil {
			t.Fatalf("an invalid MAX_FRAME_SIZE among duplicates: %v, want GOAWAY", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeProtocol {
				t.Fatalf("GOAWAY %v, want PROTOCOL_ERROR", ga.ErrCode)
			}
			break
		}
		if s, ok := f.(*http2.SettingsFrame); ok && s.IsAck() {
			t.Fatal("an invalid MAX_FRAME_SIZE among duplicates was accepted")
		}
	}
}

// TestH2MaxFrameSize: the server keeps RFC 9113's default frame size
// (16 KiB, which h2guard reads frames up to) and refuses a larger HEADERS
// frame as a connection error FRAME_SIZE_ERROR.
func TestH2MaxFrameSize(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	h := dialH2Raw(t, g)
	h.await("the server's SETTINGS", func(f http2.Frame) bool {
		s, ok := f.(*http2.SettingsFrame)
		if ok && !s.IsAck() {
			if v, ok := s.Value(http2.SettingMaxFrameSize); ok && v != 16<<10 {
				t.Fatalf("SETTINGS_MAX_FRAME_SIZE %d, want 16384", v)
			}
			return true
		}
		return false
	})
	h.request(1, "x-big", string(bytes.Repeat([]byte("a"), 40<<10))) // 25 KiB Huffman-coded
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("want GOAWAY FRAME_SIZE_ERROR, got %v", err)
		}
		if m, ok := f.(*http2.MetaHeadersFrame); ok {
			t.Fatalf("a 25 KiB HEADERS frame was answered %s", m.PseudoValue("status"))
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeFrameSize {
				t.Fatalf("GOAWAY %v, want FRAME_SIZE_ERROR", ga.ErrCode)
			}
			return
		}
	}
}

// h2Frames splits b into frames: type, flags, stream and payload each.
func h2Frames(b []byte) (fs [][4]any, rest []byte) {
	for len(b) >= 9 {
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		if len(b) < 9+n {
			break
		}
		fs = append(fs, [4]any{b[3], b[4], string(b[5:9]), string(b[9 : 9+n])})
		b = b[9+n:]
	}
	return fs, b
}

// FuzzH2Guard: whatever a client sends, the guard passes on the same
// frames in the same order, except that a SETTINGS frame may lose
// duplicates and a header block may end in a CONTINUATION frame of its
// own; DATA and every other frame pass unchanged. Run longer with:
// go test -fuzz FuzzH2Guard ./internal/gateway
func FuzzH2Guard(f *testing.F) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
	f.Add(append([]byte(nil), buf.Bytes()...))
	buf.Reset()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, kv := range [][2]string{{":method", "GET"}, {":path", "/"}, {"connection", "close"}, {"te", "gzip"}} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes()[:3], EndStream: true})
	fr.WriteContinuation(1, true, block.Bytes()[3:])
	fr.WriteData(1, true, []byte("hello"))
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block.Bytes(), EndHeaders: true, PadLength: 3,
		Priority: http2.PriorityParam{StreamDep: 1, Weight: 7}})
	f.Add(append([]byte(nil), buf.Bytes()...))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := append([]byte(h2Preface), data...)
		out, err := io.ReadAll(newH2Guard(nil, bytes.NewReader(in), 1<<16))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(out, []byte(h2Preface)) {
			t.Fatalf("the preface changed: %q", out)
		}
		want, wrest := h2Frames(in[len(h2Preface):])
		got, grest := h2Frames(out[len(h2Preface):])
		if !bytes.Equal(wrest, grest) {
			t.Fatalf("the unparsed rest changed: %q, want %q", grest, wrest)
		}
		j := 0
		for _, w := range want {
			if j >= len(got) {
				t.Fatalf("frame %v lost", w)
			}
			g := got[j]
			j++
			switch w[0].(byte) {
			case h2FrameSettings:
				if g[0] != w[0] || len(g[3].(string)) > len(w[3].(string)) {
					t.Fatalf("SETTINGS %q became %v %q", w[3], g[0], g[3])
				}
				continue
			case h2FrameHeaders, h2FrameContinuation:
				if g[0] == w[0] && g[2] == w[2] && g[3] == w[3] && g[1].(byte)&^h2FlagEndHeaders == w[1].(byte)&^h2FlagEndHeaders {
					if g[1] != w[1] { // END_HEADERS moved to a frame of ours
						if j >= len(got) || got[j][0].(byte) != h2FrameContinuation || got[j][3] != string(h2Malformed) {
							t.Fatalf("END_HEADERS dropped without a CONTINUATION of ours after it")
						}
						j++
					}
					continue
				}
			}
			if g != w {
				t.Fatalf("frame %v became %v", w, g)
			}
		}
		if j != len(got) {
			t.Fatalf("extra frames: %v", got[j:])
		}
	})
}
