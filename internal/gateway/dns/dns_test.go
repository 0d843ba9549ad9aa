package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func start(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// resolver is Go's own DNS client, talking only to addr over network
// ("udp" lets it choose as usual; "tcp" forces TCP).
func resolver(addr, network string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, n, _ string) (net.Conn, error) {
			if network == "tcp" {
				n = "tcp"
			}
			var d net.Dialer
			return d.DialContext(ctx, n, addr)
		},
	}
}

func sample() map[string][]Endpoint {
	return map[string][]Endpoint{
		"web": {
			{ID: "task1", IP: netip.MustParseAddr("10.0.0.1"), Ports: []Port{{Name: "http", Port: 20001}, {Name: "metrics", Port: 20002}}},
			{ID: "task2", IP: netip.MustParseAddr("10.0.0.2"), Ports: []Port{{Name: "http", Port: 20003}}},
			{ID: "task3", IP: netip.MustParseAddr("fd00::3"), Ports: []Port{{Name: "http", Port: 20004}}},
		},
		"dns-cache": {
			{ID: "task9", IP: netip.MustParseAddr("10.0.0.9"), Ports: []Port{{Name: "dns", Protocol: "udp", Port: 5353}}},
		},
		"empty": nil,
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	if err := s.Update(sample()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, network := range []string{"udp", "tcp"} {
		r := resolver(s.Addr(), network)
		addrs, err := r.LookupHost(ctx, "web.berth.")
		if err != nil {
			t.Fatalf("%s: LookupHost: %v", network, err)
		}
		slices.Sort(addrs)
		if want := []string{"10.0.0.1", "10.0.0.2", "fd00::3"}; !slices.Equal(addrs, want) {
			t.Errorf("%s: web.berth = %v, want %v", network, addrs, want)
		}
		// Case does not matter.
		if addrs, err := r.LookupHost(ctx, "WEB.Berth."); err != nil || len(addrs) != 3 {
			t.Errorf("%s: WEB.Berth = %v, %v", network, addrs, err)
		}
		cname, srvs, err := r.LookupSRV(ctx, "http", "tcp", "web.berth.")
		if err != nil {
			t.Fatalf("%s: LookupSRV: %v", network, err)
		}
		var got []string
		for _, srv := range srvs {
			got = append(got, fmt.Sprintf("%s:%d", srv.Target, srv.Port))
		}
		slices.Sort(got)
		want := []string{"task1.web.berth.:20001", "task2.web.berth.:20003", "task3.web.berth.:20004"}
		if cname != "_http._tcp.web.berth." || !slices.Equal(got, want) {
			t.Errorf("%s: SRV %s = %v, want %v", network, cname, got, want)
		}
		// SRV targets resolve.
		if addrs, err := r.LookupHost(ctx, "task2.web.berth."); err != nil || len(addrs) != 1 || addrs[0] != "10.0.0.2" {
			t.Errorf("%s: task2.web.berth = %v, %v", network, addrs, err)
		}
		if _, srvs, err := r.LookupSRV(ctx, "dns", "udp", "dns-cache.berth."); err != nil || len(srvs) != 1 || srvs[0].Port != 5353 {
			t.Errorf("%s: _dns._udp.dns-cache = %v, %v", network, srvs, err)
		}
		// Unknown names: NXDOMAIN.
		for _, name := range []string{"nope.berth.", "task9.web.berth.", "x.task1.web.berth."} {
			_, err := r.LookupHost(ctx, name)
			var de *net.DNSError
			if !errors.As(err, &de) || !de.IsNotFound {
				t.Errorf("%s: %s: %v, want not found", network, name, err)
			}
		}
		if _, _, err := r.LookupSRV(ctx, "ftp", "tcp", "web.berth."); !isNotFound(err) {
			t.Errorf("%s: unknown SRV: %v, want not found", network, err)
		}
		// A service without healthy tasks exists but has no address.
		if addrs, err := r.LookupHost(ctx, "empty.berth."); len(addrs) != 0 || err == nil {
			t.Errorf("%s: empty.berth = %v, %v", network, addrs, err)
		}
	}
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// TestRcodes checks the codes a resolver library hides: NXDOMAIN vs NODATA,
// REFUSED for names outside the zone, authoritative answers.
func TestRcodes(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	if err := s.Update(sample()); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		qtype dnsmessage.Type
		rcode dnsmessage.RCode
		n     int
	}{
		{"web.berth.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, 2},
		{"web.berth.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, 1},
		{"dns-cache.berth.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, 0}, // NODATA, not NXDOMAIN
		{"_tcp.web.berth.", dnsmessage.TypeSRV, dnsmessage.RCodeSuccess, 0},   // an empty non-terminal
		{"berth.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, 0},
		{"missing.berth.", dnsmessage.TypeA, dnsmessage.RCodeNameError, 0},
		{"example.com.", dnsmessage.TypeA, dnsmessage.RCodeRefused, 0},
	}
	for _, c := range cases {
		h, answers := query(t, s.Addr(), c.name, c.qtype)
		if h.RCode != c.rcode || len(answers) != c.n {
			t.Errorf("%s %s: %s with %d answers, want %s with %d", c.name, c.qtype, h.RCode, len(answers), c.rcode, c.n)
		}
		if c.rcode != dnsmessage.RCodeRefused && !h.Authoritative {
			t.Errorf("%s: answer not authoritative", c.name)
		}
	}
}

// query sends one raw UDP query and parses the answer.
func query(t *testing.T, addr, name string, qtype dnsmessage.Type) (dnsmessage.Header, []dnsmessage.Resource) {
	t.Helper()
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 42, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: qtype, Class: dnsmessage.ClassINET}},
	}
	b, err := msg.Pack()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var resp dnsmessage.Message
	if err := resp.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	if resp.ID != 42 || !resp.Response {
		t.Fatalf("bad answer header %+v", resp.Header)
	}
	return resp.Header, resp.Answers
}

// TestTruncationFallsBackToTCP: a service with more addresses than fit in a
// UDP answer is still resolved in full (the client retries over TCP).
func TestTruncationFallsBackToTCP(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	var eps []Endpoint
	for i := 0; i < 300; i++ {
		eps = append(eps, Endpoint{ID: fmt.Sprintf("t%d", i), IP: netip.AddrFrom4([4]byte{10, 1, byte(i / 256), byte(i % 256)})})
	}
	if err := s.Update(map[string][]Endpoint{"big": eps}); err != nil {
		t.Fatal(err)
	}
	h, _ := query(t, s.Addr(), "big.berth.", dnsmessage.TypeA)
	if !h.Truncated {
		t.Fatal("a 300-address answer over UDP is not truncated")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := resolver(s.Addr(), "udp").LookupHost(ctx, "big.berth.")
	if err != nil || len(addrs) != 300 {
		t.Fatalf("got %d addresses, %v; want 300", len(addrs), err)
	}
}

// TestUpdate: answers follow Update; a bad record set changes nothing.
func TestUpdate(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	if err := s.Update(sample()); err != nil {
		t.Fatal(err)
	}
	bad := map[string][]Endpoint{"Bad_Name": nil, "ok": {{ID: "t1"}}}
	if err := s.Update(bad); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "Bad_Name") {
		t.Fatalf("bad records: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := resolver(s.Addr(), "udp")
	if addrs, err := r.LookupHost(ctx, "web.berth."); err != nil || len(addrs) != 3 {
		t.Fatalf("after a rejected update: %v, %v", addrs, err)
	}
	if err := s.Update(map[string][]Endpoint{"web": {{ID: "task7", IP: netip.MustParseAddr("10.0.0.7")}}}); err != nil {
		t.Fatal(err)
	}
	if addrs, err := r.LookupHost(ctx, "web.berth."); err != nil || !slices.Equal(addrs, []string{"10.0.0.7"}) {
		t.Fatalf("after update: %v, %v", addrs, err)
	}
}

// TestListenTwice: a second Listen answers on another address with the
// same records, updates included; Addr stays the first; Close ends both.
func TestListenTwice(t *testing.T) {
	t.Parallel()
	s := start(t, Options{})
	first := s.Addr()
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != first {
		t.Fatalf("Addr after a second Listen = %s, want the first, %s", s.Addr(), first)
	}
	s.mu.Lock()
	second := s.udps[1].LocalAddr().String()
	s.mu.Unlock()
	if err := s.Update(map[string][]Endpoint{"web": {{ID: "task7", IP: netip.MustParseAddr("10.0.0.7")}}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, addr := range []string{first, second} {
		for _, network := range []string{"udp", "tcp"} {
			if addrs, err := resolver(addr, network).LookupHost(ctx, "web.berth."); err != nil || !slices.Equal(addrs, []string{"10.0.0.7"}) {
				t.Errorf("%s over %s: %v, %v", addr, network, addrs, err)
			}
		}
	}
}

// TestForwardUpstream: names outside the zone go to the upstream.
func TestForwardUpstream(t *testing.T) {
	t.Parallel()
	up := start(t, Options{Domain: "example.test"})
	if err := up.Update(map[string][]Endpoint{"www": {{ID: "w1", IP: netip.MustParseAddr("192.0.2.10")}}}); err != nil {
		t.Fatal(err)
	}
	s := start(t, Options{Upstream: up.Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, network := range []string{"udp", "tcp"} {
		addrs, err := resolver(s.Addr(), network).LookupHost(ctx, "www.example.test.")
		if err != nil || !slices.Equal(addrs, []string{"192.0.2.10"}) {
			t.Fatalf("%s: forwarded lookup: %v, %v", network, addrs, err)
		}
	}
}

func TestNewRejectsBadDomain(t *testing.T) {
	if _, err := New(Options{Domain: ".."}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err %v", err)
	}
}
