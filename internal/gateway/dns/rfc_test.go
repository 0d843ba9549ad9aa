package dns

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// The tests in this file hold the server to the RFCs a generic DNS client
// (dig, a stub resolver, a conformance suite) expects, over real UDP and
// TCP sockets: EDNS (RFC 6891, 3225), negative answers (RFC 2308), the zone
// apex (RFC 1035), classes, opcodes and zone transfers.

// opt is the OPT record of a test query.
type opt struct {
	version uint8
	do      bool
	size    uint16
}

// msg builds a query for name/qtype in class IN, with an OPT record when o
// is not nil.
func msg(name string, qtype dnsmessage.Type, o *opt) dnsmessage.Message {
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 4242, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: qtype, Class: dnsmessage.ClassINET}},
	}
	if o != nil {
		m.Additionals = append(m.Additionals, optRR(*o))
	}
	return m
}

func optRR(o opt) dnsmessage.Resource {
	var h dnsmessage.ResourceHeader
	size := int(o.size)
	if size == 0 {
		size = 1232
	}
	h.SetEDNS0(size, dnsmessage.RCodeSuccess, o.do)
	h.TTL |= uint32(o.version) << 16
	return dnsmessage.Resource{Header: h, Body: &dnsmessage.OPTResource{}}
}

// ask sends m over network ("udp" or "tcp") to addr and returns the
// parsed answer and its size on the wire.
func ask(t *testing.T, network, addr string, m dnsmessage.Message) (dnsmessage.Message, int) {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return exchangeRaw(t, network, addr, b)
}

func exchangeRaw(t *testing.T, network, addr string, b []byte) (dnsmessage.Message, int) {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var buf []byte
	if network == "udp" {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		buf = make([]byte, 65535)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("%s: no answer: %v", network, err)
		}
		buf = buf[:n]
	} else {
		framed := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
		if _, err := c.Write(append(framed, b...)); err != nil {
			t.Fatal(err)
		}
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			t.Fatalf("%s: no answer: %v", network, err)
		}
		buf = make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	}
	var resp dnsmessage.Message
	if err := resp.Unpack(buf); err != nil {
		t.Fatalf("%s: unpack answer: %v", network, err)
	}
	if resp.ID != 4242 || !resp.Response {
		t.Fatalf("%s: bad answer header %+v", network, resp.Header)
	}
	return resp, len(buf)
}

// respOPT returns the answer's OPT record, and fails the test on more than
// one.
func respOPT(t *testing.T, m dnsmessage.Message) *dnsmessage.ResourceHeader {
	t.Helper()
	var found *dnsmessage.ResourceHeader
	for i := range m.Additionals {
		if m.Additionals[i].Header.Type == dnsmessage.TypeOPT {
			if found != nil {
				t.Fatal("answer has two OPT records")
			}
			found = &m.Additionals[i].Header
		}
	}
	return found
}

// rcode is the full (extended) RCODE of m.
func rcode(m dnsmessage.Message) dnsmessage.RCode {
	for _, r := range m.Additionals {
		if r.Header.Type == dnsmessage.TypeOPT {
			return dnsmessage.RCode(r.Header.TTL>>24<<4) | m.RCode
		}
	}
	return m.RCode
}

func types(rs []dnsmessage.Resource) []dnsmessage.Type {
	var ts []dnsmessage.Type
	for _, r := range rs {
		ts = append(ts, r.Header.Type)
	}
	return ts
}

var networks = []string{"udp", "tcp"}

// TestEDNSVersion: a query with EDNS version 1 gets BADVERS (RFC 6891
// §6.1.3): RCODE 16, split between the header and an OPT record of version
// 0 in the answer, and no answer records. Version 0 is answered as usual.
func TestEDNSVersion(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	if err := s.Update(sample()); err != nil {
		t.Fatal(err)
	}
	for _, network := range networks {
		for _, version := range []uint8{1, 255} {
			resp, _ := ask(t, network, s.Addr(), msg("web.berth.", dnsmessage.TypeA, &opt{version: version}))
			o := respOPT(t, resp)
			if o == nil {
				t.Fatalf("%s: EDNS version %d: answer has no OPT record", network, version)
			}
			if got := rcode(resp); got != rcodeBadVers || resp.RCode != 0 {
				t.Errorf("%s: EDNS version %d: rcode %d (header %d), want BADVERS (16, header 0)", network, version, got, resp.RCode)
			}
			if v := uint8(o.TTL >> 16); v != 0 {
				t.Errorf("%s: answer's OPT has version %d, want 0", network, v)
			}
			if len(resp.Answers) != 0 {
				t.Errorf("%s: BADVERS with %d answers", network, len(resp.Answers))
			}
		}
		resp, _ := ask(t, network, s.Addr(), msg("web.berth.", dnsmessage.TypeA, &opt{}))
		if o := respOPT(t, resp); o == nil || rcode(resp) != dnsmessage.RCodeSuccess || len(resp.Answers) != 2 {
			t.Errorf("%s: EDNS version 0: rcode %s, %d answers, OPT %v", network, rcode(resp), len(resp.Answers), o)
		}
		// No EDNS in the query: none in the answer (RFC 6891 §7).
		resp, _ = ask(t, network, s.Addr(), msg("web.berth.", dnsmessage.TypeA, nil))
		if o := respOPT(t, resp); o != nil {
			t.Errorf("%s: answer to a query without EDNS has an OPT record", network)
		}
	}
}

// TestEDNSDOBit: the DO bit of the query is copied to the answer (RFC 3225
// §3), in every kind of answer, and not set when the query did not set it.
func TestEDNSDOBit(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	if err := s.Update(sample()); err != nil {
		t.Fatal(err)
	}
	for _, network := range networks {
		for _, c := range []struct {
			name  string
			qtype dnsmessage.Type
		}{
			{"web.berth.", dnsmessage.TypeA},       // an answer
			{"missing.berth.", dnsmessage.TypeA},   // NXDOMAIN
			{"example.com.", dnsmessage.TypeA},     // REFUSED
			{"berth.", dnsmessage.TypeSOA},         // the apex
			{"dns-cache.berth.", dnsmessage.TypeA}, // NODATA
		} {
			for _, do := range []bool{true, false} {
				resp, _ := ask(t, network, s.Addr(), msg(c.name, c.qtype, &opt{do: do}))
				o := respOPT(t, resp)
				if o == nil {
					t.Errorf("%s: %s %s: no OPT in the answer", network, c.name, c.qtype)
					continue
				}
				if o.DNSSECAllowed() != do {
					t.Errorf("%s: %s %s: DO=%v in the query, DO=%v in the answer", network, c.name, c.qtype, do, o.DNSSECAllowed())
				}
			}
		}
	}
}

// TestFormErrTwoOPT: a query with two OPT records is a FORMERR (RFC 6891
// §6.1.1).
func TestFormErrTwoOPT(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	for _, network := range networks {
		m := msg("web.berth.", dnsmessage.TypeA, &opt{})
		m.Additionals = append(m.Additionals, optRR(opt{}))
		resp, _ := ask(t, network, s.Addr(), m)
		if resp.RCode != dnsmessage.RCodeFormatError {
			t.Errorf("%s: two OPT records: %s, want FORMERR", network, resp.RCode)
		}
	}
}

// TestApex: the zone apex has a SOA and an NS record; the NS names a host
// that answers with the address the query came to; negative answers carry
// the SOA in the authority section (RFC 2308 §3), and positive ones do not.
func TestApex(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	if err := s.Update(sample()); err != nil {
		t.Fatal(err)
	}
	for _, network := range networks {
		resp, _ := ask(t, network, s.Addr(), msg("berth.", dnsmessage.TypeSOA, nil))
		if resp.RCode != dnsmessage.RCodeSuccess || !resp.Authoritative || len(resp.Answers) != 1 {
			t.Fatalf("%s: berth. SOA: %s, aa=%v, answers %v", network, resp.RCode, resp.Authoritative, types(resp.Answers))
		}
		soa, ok := resp.Answers[0].Body.(*dnsmessage.SOAResource)
		if !ok || resp.Answers[0].Header.Name.String() != "berth." {
			t.Fatalf("%s: berth. SOA answer is %+v", network, resp.Answers[0])
		}
		if soa.NS.String() != "ns.berth." || soa.MinTTL != 5 {
			t.Errorf("%s: SOA %+v", network, soa)
		}
		// The serial grows with every change of the records.
		if err := s.Update(sample()); err != nil {
			t.Fatal(err)
		}
		resp, _ = ask(t, network, s.Addr(), msg("berth.", dnsmessage.TypeSOA, nil))
		if next := resp.Answers[0].Body.(*dnsmessage.SOAResource).Serial; next != soa.Serial+1 {
			t.Errorf("%s: SOA serial %d after an update, want %d", network, next, soa.Serial+1)
		}

		resp, _ = ask(t, network, s.Addr(), msg("berth.", dnsmessage.TypeNS, nil))
		if resp.RCode != dnsmessage.RCodeSuccess || len(resp.Answers) != 1 {
			t.Fatalf("%s: berth. NS: %s, answers %v", network, resp.RCode, types(resp.Answers))
		}
		ns, ok := resp.Answers[0].Body.(*dnsmessage.NSResource)
		if !ok || ns.NS.String() != "ns.berth." {
			t.Fatalf("%s: berth. NS answer is %+v", network, resp.Answers[0])
		}
		// The glue: the NS host's address, the one the query came to.
		if len(resp.Additionals) != 1 || resp.Additionals[0].Header.Name.String() != "ns.berth." {
			t.Errorf("%s: berth. NS: additionals %v, want the A record of ns.berth.", network, resp.Additionals)
		}
		resp, _ = ask(t, network, s.Addr(), msg("ns.berth.", dnsmessage.TypeA, nil))
		if len(resp.Answers) != 1 || resp.Answers[0].Body.(*dnsmessage.AResource).A != [4]byte{127, 0, 0, 1} {
			t.Errorf("%s: ns.berth. A: %s %v, want 127.0.0.1", network, resp.RCode, resp.Answers)
		}
		resp, _ = ask(t, network, s.Addr(), msg("ns.berth.", dnsmessage.TypeAAAA, nil))
		if resp.RCode != dnsmessage.RCodeSuccess || len(resp.Answers) != 0 {
			t.Errorf("%s: ns.berth. AAAA: %s %v, want NODATA", network, resp.RCode, resp.Answers)
		}

		// ANY at the apex: its SOA and NS.
		resp, _ = ask(t, network, s.Addr(), msg("berth.", dnsmessage.TypeALL, nil))
		if got := types(resp.Answers); !slices.Contains(got, dnsmessage.TypeSOA) || !slices.Contains(got, dnsmessage.TypeNS) {
			t.Errorf("%s: berth. ANY: %v, want SOA and NS", network, got)
		}
		// ANY at a service: its addresses and SRV records.
		resp, _ = ask(t, network, s.Addr(), msg("web.berth.", dnsmessage.TypeALL, nil))
		if got := types(resp.Answers); len(got) != 3 || resp.RCode != dnsmessage.RCodeSuccess {
			t.Errorf("%s: web.berth. ANY: %s %v, want 2 A and 1 AAAA", network, resp.RCode, got)
		}

		for _, c := range []struct {
			name  string
			qtype dnsmessage.Type
			rcode dnsmessage.RCode
		}{
			{"missing.berth.", dnsmessage.TypeA, dnsmessage.RCodeNameError},
			{"x.task1.web.berth.", dnsmessage.TypeA, dnsmessage.RCodeNameError},
			{"dns-cache.berth.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess},
			{"web.berth.", dnsmessage.TypeSOA, dnsmessage.RCodeSuccess},
			{"web.berth.", dnsmessage.TypeTXT, dnsmessage.RCodeSuccess},
			{"berth.", dnsmessage.TypeA, dnsmessage.RCodeSuccess},
			{"_tcp.web.berth.", dnsmessage.TypeSRV, dnsmessage.RCodeSuccess},
		} {
			for _, o := range []*opt{nil, {}} {
				resp, _ := ask(t, network, s.Addr(), msg(c.name, c.qtype, o))
				if resp.RCode != c.rcode || len(resp.Answers) != 0 {
					t.Errorf("%s: %s %s: %s with %d answers, want %s with none", network, c.name, c.qtype, resp.RCode, len(resp.Answers), c.rcode)
				}
				if len(resp.Authorities) != 1 || resp.Authorities[0].Header.Type != dnsmessage.TypeSOA || resp.Authorities[0].Header.Name.String() != "berth." {
					t.Errorf("%s: %s %s (EDNS %v): authority %v, want the zone's SOA", network, c.name, c.qtype, o != nil, types(resp.Authorities))
				}
			}
		}
		resp, _ = ask(t, network, s.Addr(), msg("web.berth.", dnsmessage.TypeA, nil))
		if len(resp.Authorities) != 0 {
			t.Errorf("%s: a positive answer has authorities %v", network, types(resp.Authorities))
		}
	}
}

// TestServiceNamedNS: a service named "ns" keeps its own records; the
// apex's NS still names it.
func TestServiceNamedNS(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	if err := s.Update(map[string][]Endpoint{"ns": {{ID: "t1", IP: netip.MustParseAddr("10.0.0.5")}}}); err != nil {
		t.Fatal(err)
	}
	resp, _ := ask(t, "udp", s.Addr(), msg("ns.berth.", dnsmessage.TypeA, nil))
	if len(resp.Answers) != 1 || resp.Answers[0].Body.(*dnsmessage.AResource).A != [4]byte{10, 0, 0, 5} {
		t.Errorf("ns.berth. A with a service named ns: %v", resp.Answers)
	}
}

// TestClassesAndTransfers: only class IN (and ANY) is served: a CH question,
// such as version.bind, is REFUSED rather than answered from the IN zone;
// zone transfers are REFUSED, inside the zone and out, even with an
// upstream; so are other classes outside the zone.
func TestClassesAndTransfers(t *testing.T) {
	t.Parallel()
	up := start(t, Options{Domain: "example.test"})
	for _, upstream := range []string{"", up.Addr()} {
		s := start(t, Options{Upstream: upstream})
		if err := s.Update(sample()); err != nil {
			t.Fatal(err)
		}
		for _, network := range networks {
			for _, c := range []struct {
				name  string
				class dnsmessage.Class
				qtype dnsmessage.Type
				rcode dnsmessage.RCode
			}{
				{"version.bind.", dnsmessage.ClassCHAOS, dnsmessage.TypeTXT, dnsmessage.RCodeRefused},
				{"hostname.bind.", dnsmessage.ClassCHAOS, dnsmessage.TypeTXT, dnsmessage.RCodeRefused},
				{"web.berth.", dnsmessage.ClassCHAOS, dnsmessage.TypeA, dnsmessage.RCodeRefused},
				{"web.berth.", dnsmessage.ClassHESIOD, dnsmessage.TypeA, dnsmessage.RCodeRefused},
				{"web.berth.", dnsmessage.Class(42), dnsmessage.TypeA, dnsmessage.RCodeRefused},
				{"berth.", dnsmessage.ClassINET, dnsmessage.TypeAXFR, dnsmessage.RCodeRefused},
				{"berth.", dnsmessage.ClassINET, dnsmessage.Type(251), dnsmessage.RCodeRefused}, // IXFR
				{"web.berth.", dnsmessage.ClassINET, dnsmessage.TypeAXFR, dnsmessage.RCodeRefused},
				{"example.test.", dnsmessage.ClassINET, dnsmessage.TypeAXFR, dnsmessage.RCodeRefused},
				{"web.berth.", dnsmessage.ClassANY, dnsmessage.TypeA, dnsmessage.RCodeSuccess},
			} {
				m := msg(c.name, c.qtype, &opt{})
				m.Questions[0].Class = c.class
				resp, _ := ask(t, network, s.Addr(), m)
				if resp.RCode != c.rcode {
					t.Errorf("upstream %q, %s: %s %s %s: %s, want %s", upstream, network, c.name, c.class, c.qtype, resp.RCode, c.rcode)
				}
				if c.rcode != dnsmessage.RCodeSuccess && (len(resp.Answers) != 0 || len(resp.Authorities) != 0) {
					t.Errorf("upstream %q, %s: %s %s %s: refused with records %v %v", upstream, network, c.name, c.class, c.qtype, resp.Answers, resp.Authorities)
				}
				if len(resp.Questions) != 1 || resp.Questions[0].Class != c.class {
					t.Errorf("%s: %s %s: question not echoed: %v", network, c.name, c.class, resp.Questions)
				}
				if respOPT(t, resp) == nil {
					t.Errorf("%s: %s %s: no OPT in the answer", network, c.name, c.class)
				}
			}
		}
	}
}

// TestOpcodesAndQuestionCount: opcodes other than QUERY get NOTIMP; a query
// without exactly one question gets FORMERR.
func TestOpcodesAndQuestionCount(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	if err := s.Update(sample()); err != nil {
		t.Fatal(err)
	}
	for _, network := range networks {
		for _, op := range []dnsmessage.OpCode{1, 2, 4, 5, 6, 15} { // IQUERY, STATUS, NOTIFY, UPDATE, DSO, unassigned
			m := msg("web.berth.", dnsmessage.TypeSOA, nil)
			m.OpCode = op
			resp, _ := ask(t, network, s.Addr(), m)
			if resp.RCode != dnsmessage.RCodeNotImplemented || resp.OpCode != op || len(resp.Answers) != 0 {
				t.Errorf("%s: opcode %d: %s, opcode %d, %d answers; want NOTIMP", network, op, resp.RCode, resp.OpCode, len(resp.Answers))
			}
		}
		for _, n := range []int{0, 2} {
			m := msg("web.berth.", dnsmessage.TypeA, nil)
			if n == 0 {
				m.Questions = nil
			} else {
				m.Questions = append(m.Questions, m.Questions[0])
			}
			resp, _ := ask(t, network, s.Addr(), m)
			if resp.RCode != dnsmessage.RCodeFormatError || len(resp.Answers) != 0 {
				t.Errorf("%s: %d questions: %s with %d answers, want FORMERR", network, n, resp.RCode, len(resp.Answers))
			}
		}
		// A question cut short: FORMERR, not silence.
		m := msg("web.berth.", dnsmessage.TypeA, nil)
		b, _ := m.Pack()
		resp, _ := exchangeRaw(t, network, s.Addr(), b[:len(b)-3])
		if resp.RCode != dnsmessage.RCodeFormatError {
			t.Errorf("%s: truncated question: %s, want FORMERR", network, resp.RCode)
		}
	}
}

// TestTruncation: over UDP an answer never exceeds 512 bytes without EDNS,
// or the client's EDNS size capped at 1232; a bigger one comes back with TC
// set, the question and the OPT record, and no records; over TCP it comes
// whole.
func TestTruncation(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	var eps []Endpoint
	for i := 0; i < 100; i++ { // 100 A records: 1,600+ bytes
		eps = append(eps, Endpoint{ID: fmt.Sprintf("t%d", i), IP: netip.AddrFrom4([4]byte{10, 1, 0, byte(i)})})
	}
	var small []Endpoint
	for i := 0; i < 40; i++ { // 40 A records: ~670 bytes
		small = append(small, Endpoint{ID: fmt.Sprintf("t%d", i), IP: netip.AddrFrom4([4]byte{10, 2, 0, byte(i)})})
	}
	if err := s.Update(map[string][]Endpoint{"big": eps, "mid": small}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		o       *opt
		network string
		tc      bool
		n       int
	}{
		{"mid.berth.", nil, "udp", true, 0},
		{"mid.berth.", &opt{size: 512}, "udp", true, 0},
		{"mid.berth.", &opt{size: 1232}, "udp", false, 40},
		{"mid.berth.", &opt{size: 100}, "udp", true, 0},  // below 512 counts as 512
		{"big.berth.", &opt{size: 4096}, "udp", true, 0}, // capped at 1232
		{"big.berth.", &opt{size: 65535}, "udp", true, 0},
		{"big.berth.", nil, "tcp", false, 100},
		{"big.berth.", &opt{size: 512}, "tcp", false, 100},
	} {
		resp, size := ask(t, c.network, s.Addr(), msg(c.name, dnsmessage.TypeA, c.o))
		if resp.Truncated != c.tc || len(resp.Answers) != c.n {
			t.Errorf("%s %s (EDNS %+v): TC=%v with %d answers, want TC=%v with %d", c.network, c.name, c.o, resp.Truncated, len(resp.Answers), c.tc, c.n)
		}
		limit := 512
		if c.o != nil {
			limit = max(512, min(int(c.o.size), 1232))
		}
		if c.network == "udp" && size > limit {
			t.Errorf("%s %s (EDNS %+v): %d bytes over UDP, limit %d", c.network, c.name, c.o, size, limit)
		}
		if len(resp.Questions) != 1 || (c.o != nil) != (respOPT(t, resp) != nil) {
			t.Errorf("%s %s (EDNS %+v): questions %v, additionals %v", c.network, c.name, c.o, resp.Questions, resp.Additionals)
		}
	}
}
