package dns

import (
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzAnswer feeds arbitrary messages to the query handler. Whatever comes
// in, it must not panic, and an answer must parse, match the query's id,
// be a response, and fit in 1232 bytes over UDP (512 without EDNS is
// checked by TestTruncation).
//
//	go test -run '^$' -fuzz FuzzAnswer -fuzztime 60s ./internal/gateway/dns/
func FuzzAnswer(f *testing.F) {
	for _, m := range []dnsmessage.Message{
		msg("web.berth.", dnsmessage.TypeA, nil),
		msg("web.berth.", dnsmessage.TypeALL, &opt{do: true}),
		msg("_http._tcp.web.berth.", dnsmessage.TypeSRV, &opt{size: 4096}),
		msg("berth.", dnsmessage.TypeNS, &opt{version: 1}),
		msg("berth.", dnsmessage.TypeSOA, nil),
		msg("ns.berth.", dnsmessage.TypeA, nil),
		msg("example.com.", dnsmessage.TypeAXFR, nil),
		msg("big.berth.", dnsmessage.TypeA, nil),
	} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 12))
	s, err := New(Options{})
	if err != nil {
		f.Fatal(err)
	}
	var eps []Endpoint
	for i := range 100 {
		eps = append(eps, Endpoint{ID: "t" + string(rune('a'+i%26)) + string(rune('a'+i/26)), IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}),
			Ports: []Port{{Name: "http", Port: 1000 + i}}})
	}
	if err := s.Update(map[string][]Endpoint{"web": eps[:3], "big": eps}); err != nil {
		f.Fatal(err)
	}
	local := netip.MustParseAddr("127.0.0.1")
	f.Fuzz(func(t *testing.T, query []byte) {
		for _, udp := range []bool{true, false} {
			resp, fwd := s.answer(query, udp, local, nil)
			if fwd {
				t.Fatal("forwarded without an upstream")
			}
			if resp == nil {
				continue
			}
			var p dnsmessage.Parser
			h, err := p.Start(resp)
			if err != nil {
				t.Fatalf("answer does not parse: %v", err)
			}
			var m dnsmessage.Message
			if err := m.Unpack(resp); err != nil {
				t.Fatalf("answer does not unpack: %v", err)
			}
			if !h.Response || h.ID != uint16(query[0])<<8|uint16(query[1]) {
				t.Fatalf("answer header %+v to query %x", h, query[:2])
			}
			if udp && len(resp) > maxUDPSize {
				t.Fatalf("UDP answer of %d bytes", len(resp))
			}
		}
	})
}
