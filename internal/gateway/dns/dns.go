// Package dns is the small DNS server of Berth's service discovery. Each
// agent runs one, and tasks use it as their resolver. It answers, for the
// zone Options.Domain ("berth." by default):
//
//	<service>.berth.                A/AAAA: the addresses of the service's healthy tasks
//	<task>.<service>.berth.         A/AAAA: one task's address (the targets of SRV records)
//	_<port>._<proto>.<service>.berth. SRV: one record per task, with the port number
//
//	berth.                          SOA, and NS naming ns.berth.
//	ns.berth.                       A/AAAA: the address the query came to
//
// Unknown names in the zone get NXDOMAIN; negative answers carry the SOA
// (RFC 2308). Names outside the zone are forwarded to Options.Upstream, or
// refused when there is none. Classes other than IN (and ANY), zone
// transfers and opcodes other than QUERY are refused (REFUSED, NOTIMP);
// EDNS is version 0 only (BADVERS otherwise), with the DO bit echoed. The
// record set is replaced whole by Update. The package serves DNS only: it
// does not watch the cluster, check health or import the rest of Berth.
package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Defaults of Options.
const (
	DefaultDomain      = "berth."
	DefaultTTL         = 5 * time.Second
	DefaultMaxTCPConns = 256
	// maxUDPSize is the largest UDP answer sent to an EDNS client (the
	// DNS flag day 2020 value); without EDNS it is 512.
	maxUDPSize = 1232
	// tcpIdleTimeout closes idle TCP clients.
	tcpIdleTimeout = 10 * time.Second
	// forwardTimeout bounds a query to the upstream.
	forwardTimeout = 3 * time.Second
	// maxForwards bounds concurrent forwarded queries.
	maxForwards = 64
)

// ErrInvalid is wrapped by Update's errors for records it rejects.
var ErrInvalid = errors.New("dns: invalid records")

// Port is a named port of a task.
type Port struct {
	// Name is the port's name, a DNS label: "_<name>" in SRV names.
	Name string
	// Protocol is "tcp" (default) or "udp".
	Protocol string
	// Port is the port number.
	Port int
}

// Endpoint is one healthy task of a service.
type Endpoint struct {
	// ID is the task id, a DNS label; SRV records target <id>.<service>.
	ID string
	// IP is the task's address.
	IP netip.Addr
	// Ports are the task's named ports.
	Ports []Port
}

// Options configure a Server.
type Options struct {
	// Domain is the zone served; default "berth.".
	Domain string
	// TTL of answers; default 5s (tasks come and go).
	TTL time.Duration
	// Upstream is host:port of a resolver for names outside the zone;
	// empty means such queries are refused.
	Upstream string
	// MaxTCPConns bounds open TCP clients.
	MaxTCPConns int
	// Logger gets errors; nil discards them.
	Logger *slog.Logger
}

// Server is a DNS server for one zone. Its methods are safe for concurrent
// use.
type Server struct {
	opts   Options
	domain string // lower case, with the trailing dot
	apex   dnsmessage.Name
	nsHost string // ns.<domain>: the server's own name, in the SOA and NS
	soa    dnsmessage.SOAResource
	log    *slog.Logger

	zone atomic.Pointer[zone]
	// serial is the SOA serial: the start time in seconds, plus one per
	// Update, so that it grows with every change, across restarts too.
	serial atomic.Uint32

	mu     sync.Mutex
	udps   []*net.UDPConn // one per Listen, with the TCP listener of tcps
	tcps   []net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	tcpSlots chan struct{}
	fwdSlots chan struct{}
}

// zone is one record set, compiled for lookups.
type zone struct {
	addrs map[string][]netip.Addr // A and AAAA
	srv   map[string][]srvRecord
	names map[string]bool // every name with records, and their ancestors in the zone
}

type srvRecord struct {
	target string
	port   uint16
}

// New returns a server with no records. Call Listen to serve.
func New(opts Options) (*Server, error) {
	if opts.Domain == "" {
		opts.Domain = DefaultDomain
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.MaxTCPConns <= 0 {
		opts.MaxTCPConns = DefaultMaxTCPConns
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	domain := strings.ToLower(opts.Domain)
	if !strings.HasSuffix(domain, ".") {
		domain += "."
	}
	s := &Server{
		opts:     opts,
		domain:   domain,
		log:      opts.Logger.WithGroup("dns"),
		conns:    map[net.Conn]struct{}{},
		tcpSlots: make(chan struct{}, opts.MaxTCPConns),
		fwdSlots: make(chan struct{}, maxForwards),
	}
	apex, err1 := dnsmessage.NewName(domain)
	ns, err2 := dnsmessage.NewName("ns." + domain)
	mbox, err3 := dnsmessage.NewName("hostmaster." + domain)
	if err := errors.Join(err1, err2, err3); err != nil || strings.HasPrefix(domain, ".") {
		return nil, fmt.Errorf("dns: domain %q: %w", opts.Domain, errors.Join(ErrInvalid, err))
	}
	s.apex = apex
	s.nsHost = "ns." + domain
	s.soa = dnsmessage.SOAResource{
		NS:      ns,
		MBox:    mbox,
		Refresh: 60,
		Retry:   60,
		Expire:  3600,
		MinTTL:  uint32(opts.TTL / time.Second),
	}
	s.zone.Store(&zone{names: map[string]bool{domain: true}})
	s.serial.Store(uint32(time.Now().Unix()))
	return s, nil
}

// Update replaces every record with those of services (service name →
// healthy endpoints). Nothing changes when it returns an error.
func (s *Server) Update(services map[string][]Endpoint) error {
	z := &zone{addrs: map[string][]netip.Addr{}, srv: map[string][]srvRecord{}, names: map[string]bool{s.domain: true}}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...))
	}
	for svc, eps := range services {
		if !validLabel(svc) {
			bad("service name %q is not a DNS label", svc)
			continue
		}
		svcName := strings.ToLower(svc) + "." + s.domain
		z.names[svcName] = true
		seen := map[netip.Addr]bool{}
		for i, ep := range eps {
			if !ep.IP.IsValid() {
				bad("service %q endpoint %d (%q): no IP address", svc, i, ep.ID)
				continue
			}
			ip := ep.IP.Unmap()
			if !seen[ip] {
				seen[ip] = true
				z.addrs[svcName] = append(z.addrs[svcName], ip)
			}
			if !validLabel(ep.ID) {
				bad("service %q endpoint %d: task id %q is not a DNS label", svc, i, ep.ID)
				continue
			}
			target := strings.ToLower(ep.ID) + "." + svcName
			z.names[target] = true
			z.addrs[target] = []netip.Addr{ip}
			for _, p := range ep.Ports {
				proto := strings.ToLower(p.Protocol)
				if proto == "" {
					proto = "tcp"
				}
				if !validLabel(p.Name) || (proto != "tcp" && proto != "udp") || p.Port < 1 || p.Port > 65535 {
					bad("service %q task %q: bad port %q/%s %d", svc, ep.ID, p.Name, p.Protocol, p.Port)
					continue
				}
				name := "_" + strings.ToLower(p.Name) + "._" + proto + "." + svcName
				z.srv[name] = append(z.srv[name], srvRecord{target: target, port: uint16(p.Port)})
				z.names[name] = true
				z.names["_"+proto+"."+svcName] = true // an empty non-terminal
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	s.zone.Store(z)
	s.serial.Add(1)
	return nil
}

func validLabel(l string) bool {
	if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Listen serves UDP and TCP on addr (host:port; port 0 picks one free for
// both) until Close. It may be called again to answer on another address
// too, with the same records.
func (s *Server) Listen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("dns: listen: %w", err)
	}
	var udp *net.UDPConn
	var tcp net.Listener
	// With port 0 the UDP port the kernel picks may be taken for TCP:
	// try a few times.
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return fmt.Errorf("dns: listen: %w", err)
		}
		udp = pc.(*net.UDPConn)
		p := strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port)
		tcp, err = net.Listen("tcp", net.JoinHostPort(host, p))
		if err == nil {
			break
		}
		udp.Close()
		if port != "0" || attempt >= 10 {
			return fmt.Errorf("dns: listen: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		udp.Close()
		tcp.Close()
		return errors.New("dns: server closed")
	}
	s.udps, s.tcps = append(s.udps, udp), append(s.tcps, tcp)
	s.wg.Add(2)
	go s.serveUDP(udp)
	go s.serveTCP(tcp)
	return nil
}

// Addr returns the address of the first Listen (UDP and TCP share the
// port), or "".
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.udps) == 0 {
		return ""
	}
	return s.udps[0].LocalAddr().String()
}

// Close stops serving and waits for the server's goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	var errs []error
	for i := range s.udps {
		errs = append(errs, s.udps[i].Close(), s.tcps[i].Close())
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}

func (s *Server) serveUDP(pc *net.UDPConn) {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	out := make([]byte, 0, 4096)
	// The socket's own address, unless it is a wildcard one (then the
	// address a query came to is not known, and ns.<zone> has none).
	local := pc.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	if local.IsUnspecified() {
		local = netip.Addr{}
	}
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		resp, fwd := s.answer(buf[:n], true, local, out[:0])
		if fwd {
			s.forwardAsync(append([]byte(nil), buf[:n]...), func(reply []byte) { pc.WriteToUDPAddrPort(reply, from) })
			continue
		}
		if resp != nil {
			pc.WriteToUDPAddrPort(resp, from)
		}
	}
}

func (s *Server) serveTCP(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		select {
		case s.tcpSlots <- struct{}{}:
		default:
			c.Close() // too many clients
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			<-s.tcpSlots
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
				<-s.tcpSlots
			}()
			s.serveTCPConn(c)
		}()
	}
}

// serveTCPConn answers length-prefixed queries until the client goes or
// idles.
func (s *Server) serveTCPConn(c net.Conn) {
	var local netip.Addr
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		local = a.AddrPort().Addr().Unmap()
	}
	var lenBuf [2]byte
	buf := make([]byte, 65535)
	for {
		c.SetDeadline(time.Now().Add(tcpIdleTimeout))
		if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		resp, fwd := s.answer(buf[:n], false, local, nil)
		if fwd {
			resp = s.forward(buf[:n], "tcp")
		}
		if resp == nil {
			return
		}
		framed := make([]byte, 2+len(resp))
		binary.BigEndian.PutUint16(framed, uint16(len(resp)))
		copy(framed[2:], resp)
		if _, err := c.Write(framed); err != nil {
			return
		}
	}
}

// rcodeBadVers is RFC 6891's extended RCODE 16: the query's EDNS version is
// one this server does not speak. Its upper 8 bits travel in the OPT record.
const rcodeBadVers = dnsmessage.RCode(16)

// ednsInfo is what a query's OPT record asked for (RFC 6891).
type ednsInfo struct {
	present bool
	version uint8
	do      bool // DNSSEC OK: copied to the answer's OPT (RFC 3225 §3)
	size    int  // the largest UDP answer to send: 512 without EDNS
}

// parseEDNS reads the sections after the question and finds the OPT record.
// A message that does not parse, or has more than one OPT record or one not
// owned by the root, is a format error (RFC 6891 §6.1.1).
func parseEDNS(p *dnsmessage.Parser) (ednsInfo, error) {
	e := ednsInfo{size: 512}
	if err := p.SkipAllAnswers(); err != nil {
		return e, err
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return e, err
	}
	for {
		ah, err := p.AdditionalHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return e, nil
		}
		if err != nil {
			return e, err
		}
		if ah.Type == dnsmessage.TypeOPT {
			if e.present {
				return e, errors.New("two OPT records")
			}
			if ah.Name.Length != 1 || ah.Name.Data[0] != '.' {
				return e, errors.New("OPT record not owned by the root")
			}
			e.present = true
			e.version = uint8(ah.TTL >> 16)
			e.do = ah.DNSSECAllowed()
			e.size = max(512, min(int(ah.Class), maxUDPSize))
		}
		if err := p.SkipAdditional(); err != nil {
			return e, err
		}
	}
}

// reply is a response to build: a header whose RCode may be an extended
// one, the question (nil when the query had none that parsed), the records
// (nil for none) and the EDNS state to echo.
type reply struct {
	hdr  dnsmessage.Header
	q    *dnsmessage.Question
	a    *answerSet
	edns ednsInfo
}

// answer builds the response to query into out. It returns nil for a
// message not worth answering, and fwd when the query is for the upstream.
// local is the address the query came to, when known: the address of the
// zone's name server (ns.<zone>).
func (s *Server) answer(query []byte, udp bool, local netip.Addr, out []byte) (resp []byte, fwd bool) {
	var p dnsmessage.Parser
	hdr, err := p.Start(query)
	if err != nil || hdr.Response {
		return nil, false // not a query: drop, never answer a response
	}
	r := reply{hdr: dnsmessage.Header{ID: hdr.ID, Response: true, OpCode: hdr.OpCode, RecursionDesired: hdr.RecursionDesired,
		RecursionAvailable: s.opts.Upstream != ""}, edns: ednsInfo{size: 512}}
	questions, qerr := p.AllQuestions()
	if qerr == nil && len(questions) == 1 {
		r.q = &questions[0]
	}
	var eerr error
	if qerr == nil {
		r.edns, eerr = parseEDNS(&p)
		if eerr != nil {
			r.edns = ednsInfo{size: 512} // echo no OPT when it is the fault
		}
	}
	refuse := func(rcode dnsmessage.RCode) []byte {
		r.hdr.RCode = rcode
		return s.build(out, r)
	}
	switch {
	case hdr.OpCode != 0:
		// Only QUERY: IQUERY, STATUS, NOTIFY, UPDATE and DSO are not
		// served here (RFC 1035 §4.1.1, RFC 6895 §2.2).
		return refuse(dnsmessage.RCodeNotImplemented), false
	case r.q == nil || eerr != nil:
		return refuse(dnsmessage.RCodeFormatError), false
	case r.edns.present && r.edns.version != 0:
		// Only EDNS version 0 (RFC 6891 §6.1.3): the OPT of the answer
		// says so, and carries the upper bits of BADVERS.
		return refuse(rcodeBadVers), false
	case r.q.Type == dnsmessage.TypeOPT:
		return refuse(dnsmessage.RCodeFormatError), false // a meta type is no question
	case r.q.Class != dnsmessage.ClassINET && r.q.Class != dnsmessage.ClassANY:
		// The zone is of class IN; CH (version.bind, hostname.bind) and
		// the rest are refused, not answered from it, nor forwarded.
		return refuse(dnsmessage.RCodeRefused), false
	case r.q.Type == dnsmessage.TypeAXFR || r.q.Type == typeIXFR:
		// The zone is built from live tasks and never transferred;
		// nor are transfers proxied to the upstream.
		return refuse(dnsmessage.RCodeRefused), false
	}
	name := strings.ToLower(r.q.Name.String())
	if name != s.domain && !strings.HasSuffix(name, "."+s.domain) {
		if s.opts.Upstream != "" {
			return nil, true
		}
		return refuse(dnsmessage.RCodeRefused), false
	}
	r.hdr.Authoritative = true
	r.a = s.lookup(name, r.q.Type, local)
	if !r.a.exists {
		r.hdr.RCode = dnsmessage.RCodeNameError
	}
	resp = s.build(out, r)
	if udp && len(resp) > r.edns.size {
		// Too big for UDP: say so, and the client asks again over TCP.
		r.hdr.Truncated = true
		r.a = nil
		resp = s.build(out[:0], r)
	}
	return resp, false
}

// typeIXFR is the incremental zone transfer (RFC 1995), which dnsmessage
// does not name.
const typeIXFR = dnsmessage.Type(251)

// answerSet is what a lookup found.
type answerSet struct {
	exists bool
	addrs  []netip.Addr // answers of type A or AAAA
	srv    []srvRecord
	apex   struct{ soa, ns bool } // the apex's SOA and NS records, as answers
	extra  []netip.Addr           // A/AAAA of SRV and NS targets, in order of extraN
	extraN []string
	soa    bool // negative answer: the SOA goes in the authority section (RFC 2308 §3)
}

// lookup finds the records of name. The apex has a SOA and an NS record;
// the NS names ns.<zone>, whose address is local, the address the query
// came to (when known), unless a service is named "ns": service names are
// the users', and theirs wins.
func (s *Server) lookup(name string, qtype dnsmessage.Type, local netip.Addr) *answerSet {
	z := s.zone.Load()
	a := &answerSet{exists: z.names[name]}
	addrs := z.addrs[name]
	nsHost := !z.names[s.nsHost] // ns.<zone> is the server's own name
	if name == s.nsHost && nsHost {
		a.exists = true
		if local.IsValid() {
			addrs = []netip.Addr{local}
		}
	}
	switch qtype {
	case dnsmessage.TypeA, dnsmessage.TypeAAAA, dnsmessage.TypeALL:
		for _, ip := range addrs {
			if qtype == dnsmessage.TypeALL || (qtype == dnsmessage.TypeA) == ip.Is4() {
				a.addrs = append(a.addrs, ip)
			}
		}
		// Rotate, so that clients that take the first address spread.
		if n := len(a.addrs); n > 1 {
			k := rand.IntN(n)
			a.addrs = append(a.addrs[k:n:n], a.addrs[:k]...)
		}
	case dnsmessage.TypeSRV:
		a.srv = z.srv[name]
		for _, r := range a.srv {
			for _, ip := range z.addrs[r.target] {
				a.extra = append(a.extra, ip)
				a.extraN = append(a.extraN, r.target)
			}
		}
	}
	if qtype == dnsmessage.TypeALL {
		a.srv = z.srv[name]
	}
	if name == s.domain {
		a.apex.soa = qtype == dnsmessage.TypeSOA || qtype == dnsmessage.TypeALL
		a.apex.ns = qtype == dnsmessage.TypeNS || qtype == dnsmessage.TypeALL
		if a.apex.ns && nsHost && local.IsValid() {
			a.extra = append(a.extra, local)
			a.extraN = append(a.extraN, s.nsHost)
		}
	}
	a.soa = len(a.addrs) == 0 && len(a.srv) == 0 && !a.apex.soa && !a.apex.ns
	return a
}

// build packs a response.
func (s *Server) build(out []byte, r reply) []byte {
	h := r.hdr
	h.RCode &= 0xf // the upper bits of an extended RCODE go in the OPT record
	b := dnsmessage.NewBuilder(out, h)
	b.EnableCompression()
	ttl := uint32(s.opts.TTL / time.Second)
	fail := func(err error) []byte {
		s.log.Error("build answer", "err", err)
		return nil
	}
	if err := b.StartQuestions(); err != nil {
		return fail(err)
	}
	if r.q != nil {
		if err := b.Question(*r.q); err != nil {
			return fail(err)
		}
	}
	if err := b.StartAnswers(); err != nil {
		return fail(err)
	}
	a := r.a
	if a == nil {
		a = &answerSet{}
	}
	for _, ip := range a.addrs {
		if err := addAddr(&b, r.q.Name, ip, ttl); err != nil {
			return fail(err)
		}
	}
	for _, rec := range a.srv {
		rh := dnsmessage.ResourceHeader{Name: r.q.Name, Class: dnsmessage.ClassINET, TTL: ttl}
		target, err := dnsmessage.NewName(rec.target)
		if err != nil {
			return fail(err)
		}
		if err := b.SRVResource(rh, dnsmessage.SRVResource{Priority: 0, Weight: 10, Port: rec.port, Target: target}); err != nil {
			return fail(err)
		}
	}
	apex := dnsmessage.ResourceHeader{Name: s.apex, Class: dnsmessage.ClassINET, TTL: ttl}
	soa := s.soa
	soa.Serial = s.serial.Load()
	if a.apex.soa {
		if err := b.SOAResource(apex, soa); err != nil {
			return fail(err)
		}
	}
	if a.apex.ns {
		if err := b.NSResource(apex, dnsmessage.NSResource{NS: s.soa.NS}); err != nil {
			return fail(err)
		}
	}
	if err := b.StartAuthorities(); err != nil {
		return fail(err)
	}
	if a.soa && h.Authoritative {
		if err := b.SOAResource(apex, soa); err != nil {
			return fail(err)
		}
	}
	if err := b.StartAdditionals(); err != nil {
		return fail(err)
	}
	for i, ip := range a.extra {
		n, err := dnsmessage.NewName(a.extraN[i])
		if err != nil {
			return fail(err)
		}
		if err := addAddr(&b, n, ip, ttl); err != nil {
			return fail(err)
		}
	}
	if r.edns.present {
		// Version 0, our UDP size, the DO bit of the query (we sign
		// nothing, but RFC 3225 §3 wants it copied).
		var rh dnsmessage.ResourceHeader
		if err := rh.SetEDNS0(maxUDPSize, r.hdr.RCode, r.edns.do); err != nil {
			return fail(err)
		}
		if err := b.OPTResource(rh, dnsmessage.OPTResource{}); err != nil {
			return fail(err)
		}
	}
	msg, err := b.Finish()
	if err != nil {
		return fail(err)
	}
	return msg
}

func addAddr(b *dnsmessage.Builder, name dnsmessage.Name, ip netip.Addr, ttl uint32) error {
	rh := dnsmessage.ResourceHeader{Name: name, Class: dnsmessage.ClassINET, TTL: ttl}
	if ip.Is4() {
		return b.AResource(rh, dnsmessage.AResource{A: ip.As4()})
	}
	return b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: ip.As16()})
}

// forwardAsync forwards a UDP query without blocking the read loop; when
// too many are in flight the query is dropped (the client retries).
func (s *Server) forwardAsync(query []byte, reply func([]byte)) {
	select {
	case s.fwdSlots <- struct{}{}:
	default:
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.fwdSlots }()
		if resp := s.forward(query, "udp"); resp != nil {
			reply(resp)
		}
	}()
}

// forward sends query to the upstream and returns its answer, or a
// SERVFAIL.
func (s *Server) forward(query []byte, network string) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
	defer cancel()
	resp, err := exchange(ctx, network, s.opts.Upstream, query)
	if err == nil {
		return resp
	}
	s.log.Debug("forward", "upstream", s.opts.Upstream, "err", err)
	var p dnsmessage.Parser
	hdr, perr := p.Start(query)
	if perr != nil {
		return nil
	}
	q, err := p.Question()
	r := reply{hdr: dnsmessage.Header{ID: hdr.ID, Response: true, RecursionDesired: hdr.RecursionDesired,
		RecursionAvailable: true, RCode: dnsmessage.RCodeServerFailure}}
	if err == nil {
		r.q = &q
	}
	if _, err := p.AllQuestions(); err == nil {
		r.edns, _ = parseEDNS(&p)
	}
	return s.build(nil, r)
}

func exchange(ctx context.Context, network, addr string, query []byte) ([]byte, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if network == "udp" {
		if _, err := c.Write(query); err != nil {
			return nil, err
		}
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	framed := make([]byte, 2+len(query))
	binary.BigEndian.PutUint16(framed, uint16(len(query)))
	copy(framed[2:], query)
	if _, err := c.Write(framed); err != nil {
		return nil, err
	}
	var lenBuf [2]byte
	if _, err := io.ReadFull(c, lenBuf[:]); err != nil {
		return nil, err
	}
	resp := make([]byte, binary.BigEndian.Uint16(lenBuf[:]))
	if _, err := io.ReadFull(c, resp); err != nil {
		return nil, err
	}
	return resp, nil
}
