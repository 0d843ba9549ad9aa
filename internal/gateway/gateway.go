package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	DefaultDrainTimeout        = 30 * time.Second
	DefaultReadHeaderTimeout   = 10 * time.Second
	DefaultIdleTimeout         = 2 * time.Minute
	DefaultMaxHeaderBytes      = 64 << 10
	DefaultMaxConns            = 10000
	DefaultDialTimeout         = 5 * time.Second
	DefaultUDPIdleTimeout      = 30 * time.Second
	DefaultEjectMin            = time.Second
	DefaultEjectMax            = 30 * time.Second
	DefaultMaxIdleConnsPerHost = 256
	DefaultBodyTimeout         = 20 * time.Second
	DefaultBodyMinRate         = 500
	DefaultWriteTimeout        = 60 * time.Second
	DefaultTicketKeyRotation   = 24 * time.Hour
)

// maxAttempts bounds how many backends one request or connection tries when
// connections are refused.
const maxAttempts = 5

// ErrClosed is returned by Update after Close.
var ErrClosed = errors.New("gateway: closed")

// Options configure a Gateway. Zero values mean the defaults above.
type Options struct {
	// BindAddr is the host published ports listen on; empty means every
	// interface.
	BindAddr string
	// HTTPAddr is host:port of the HTTP entrypoint (":0" picks a port);
	// empty means none.
	HTTPAddr string
	// HTTPSAddr is host:port of the HTTPS entrypoint; empty means none.
	HTTPSAddr string
	// IssueCert supplies a certificate for a host that a route names but no
	// uploaded Cert covers (see pki.GatewayCA.Issue). Results are cached
	// until a day before they expire. Nil means such hosts get the first
	// uploaded certificate, if any, else the gateway's default one
	// (DefaultCertName).
	IssueCert func(name string) (*tls.Certificate, error)

	// DrainTimeout is how long requests and connections to a removed or
	// drained backend may continue before they are cut off.
	DrainTimeout time.Duration
	// ReadHeaderTimeout bounds the TLS handshake and the reading of request
	// headers on the entrypoints (against slowloris).
	ReadHeaderTimeout time.Duration
	// TicketKeyRotation is how often the HTTPS entrypoint's session-ticket
	// key is replaced; a ticket resumes a session for up to two periods.
	TicketKeyRotation time.Duration
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout time.Duration
	// BodyTimeout bounds the reading of a request body, with or without a
	// route timeout: no read of it may wait longer, and once this grace has
	// passed the body must keep arriving at BodyMinRate (against slow-loris
	// bodies). The client gets 408 and the connection closes.
	BodyTimeout time.Duration
	// BodyMinRate is the slowest a request body may arrive after
	// BodyTimeout's grace, in bytes per second (the model is Apache's
	// mod_reqtimeout, body=20,MinRate=500).
	BodyMinRate int
	// WriteTimeout closes an HTTP/1 client connection (or resets an HTTP/2
	// stream) when a write to it makes no progress for this long — from
	// half of it to all of it (a client that stops reading its response
	// must not hold a backend connection).
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds request headers.
	MaxHeaderBytes int
	// MaxConns bounds open client connections per entrypoint and per
	// published port (for UDP: sessions).
	MaxConns int
	// DialTimeout bounds connecting to a backend.
	DialTimeout time.Duration
	// UDPIdleTimeout ends a UDP session (client address → backend) idle this
	// long.
	UDPIdleTimeout time.Duration
	// EjectMin and EjectMax bound the passive-health cool-off, which doubles
	// with each consecutive refused connection.
	EjectMin, EjectMax time.Duration
	// MaxIdleConnsPerHost is how many keep-alive connections to each backend
	// are kept for reuse.
	MaxIdleConnsPerHost int

	// Logger gets events (ejections, listener errors); nil discards them.
	Logger *slog.Logger
	// AccessLog gets one line per HTTP request; nil logs none.
	AccessLog *slog.Logger
	// Now is the clock of passive health and certificate validity; default
	// time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.DrainTimeout, DefaultDrainTimeout)
	def(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	def(&o.BodyTimeout, DefaultBodyTimeout)
	def(&o.WriteTimeout, DefaultWriteTimeout)
	def(&o.TicketKeyRotation, DefaultTicketKeyRotation)
	if o.BodyMinRate <= 0 {
		o.BodyMinRate = DefaultBodyMinRate
	}
	def(&o.DialTimeout, DefaultDialTimeout)
	def(&o.UDPIdleTimeout, DefaultUDPIdleTimeout)
	def(&o.EjectMin, DefaultEjectMin)
	def(&o.EjectMax, DefaultEjectMax)
	if o.EjectMax < o.EjectMin {
		o.EjectMax = o.EjectMin
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Gateway is a running routing mesh node: its entrypoints, published ports
// and routing table. Its methods are safe for concurrent use.
type Gateway struct {
	opts   Options
	log    *slog.Logger
	access *slog.Logger
	now    func() int64 // opts.Now in Unix nanoseconds
	ctx    context.Context
	cancel context.CancelFunc

	// tbl is the routing table in force, swapped whole by Update.
	tbl atomic.Pointer[table]

	dialer net.Dialer
	issued issuedCache
	// defaultCert is served to TLS clients the config has no certificate
	// for (see DefaultCertName).
	defaultCert *tls.Certificate

	http, https *entrypoint
	httpsPort   int

	mu       sync.Mutex // serialises Update, Drain and Close; guards the fields below
	closed   bool
	backends map[backendKey]*backendState
	tcpPorts map[int]*tcpPort
	udpPorts map[int]*udpPort

	wg sync.WaitGroup // every goroutine the gateway starts
	// conns counts the entrypoints' connections and handlers (goroutines
	// of net/http): Close waits for them after the servers stopped
	// accepting.
	conns sync.WaitGroup
}

// table is one config, compiled. It is read-only once published, except for
// pending.
type table struct {
	// pending counts goroutines between acquire and release: those that may
	// be about to pick a backend from this table. Update waits for it to
	// reach zero after replacing the table, so that when Update returns no
	// request can still pick a removed backend.
	pending atomic.Int64

	tcp    map[int]*pool
	udp    map[int]*pool
	router *router
	certs  *certStore
}

func emptyTable() *table {
	return &table{tcp: map[int]*pool{}, udp: map[int]*pool{}, router: newRouter(nil),
		certs: &certStore{exact: map[string]*tls.Certificate{}, wild: map[string]*tls.Certificate{}}}
}

// clone returns a table with the same content and its own pending count.
func (t *table) clone() *table {
	return &table{tcp: t.tcp, udp: t.udp, router: t.router, certs: t.certs}
}

// acquire returns the table in force, marked as in use until release.
func (g *Gateway) acquire() *table {
	for {
		t := g.tbl.Load()
		t.pending.Add(1)
		if g.tbl.Load() == t {
			return t
		}
		t.pending.Add(-1) // replaced meanwhile: Update may be waiting on it
	}
}

func (t *table) release() { t.pending.Add(-1) }

// swap publishes t and waits until no goroutine is picking from the old
// table. The wait is short: between acquire and release there is only a map
// lookup and a selection.
func (g *Gateway) swap(t *table) {
	old := g.tbl.Swap(t)
	for i := 0; old.pending.Load() != 0; i++ {
		if i < 100 {
			runtime.Gosched()
		} else {
			time.Sleep(20 * time.Microsecond)
		}
	}
}

// New starts a gateway with an empty config: its entrypoints listen (404 for
// everything) and no port is published until Update.
func New(opts Options) (*Gateway, error) {
	opts = opts.withDefaults()
	g := &Gateway{
		opts:     opts,
		log:      opts.Logger.WithGroup("gateway"),
		access:   opts.AccessLog,
		backends: map[backendKey]*backendState{},
		tcpPorts: map[int]*tcpPort{},
		udpPorts: map[int]*udpPort{},
	}
	g.now = func() int64 { return g.opts.Now().UnixNano() }
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.tbl.Store(emptyTable())
	g.dialer = net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second}
	var err error
	if opts.HTTPSAddr != "" {
		if g.defaultCert, err = newDefaultCert(); err != nil {
			g.cancel()
			return nil, err
		}
	}
	if opts.HTTPAddr != "" {
		if g.http, err = g.listenEntrypoint("http", opts.HTTPAddr, false); err != nil {
			g.Close()
			return nil, err
		}
	}
	if opts.HTTPSAddr != "" {
		if g.https, err = g.listenEntrypoint("https", opts.HTTPSAddr, true); err != nil {
			g.Close()
			return nil, err
		}
		g.httpsPort = g.https.ln.Addr().(*net.TCPAddr).Port
	}
	for _, ep := range []*entrypoint{g.http, g.https} {
		if ep != nil {
			g.serveEntrypoint(ep)
		}
	}
	return g, nil
}

// HTTPAddr returns the address of the HTTP entrypoint, or nil.
func (g *Gateway) HTTPAddr() net.Addr {
	if g.http == nil {
		return nil
	}
	return g.http.ln.Addr()
}

// HTTPSAddr returns the address of the HTTPS entrypoint, or nil.
func (g *Gateway) HTTPSAddr() net.Addr {
	if g.https == nil {
		return nil
	}
	return g.https.ln.Addr()
}

// reserved returns the TCP ports of the entrypoints.
func (g *Gateway) reserved() map[int]string {
	r := map[int]string{}
	for _, ep := range []*entrypoint{g.http, g.https} {
		if ep != nil {
			r[ep.ln.Addr().(*net.TCPAddr).Port] = ep.name
		}
	}
	return r
}

// Update replaces the whole routing state with cfg. It checks everything
// first (and opens new listeners) and changes nothing if anything is wrong:
// errors wrap ErrInvalidConfig and name the fields at fault, or report a port
// that cannot be opened. When Update returns, new traffic follows cfg;
// traffic to backends no longer in cfg continues until done or until
// Options.DrainTimeout, and InFlight counts it.
func (g *Gateway) Update(cfg Config) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	err := validate(&cfg, g.reserved())
	var bad invalid
	if g.https == nil {
		for i, r := range cfg.Routes {
			if r.RedirectHTTPS {
				bad.add(fmt.Sprintf("routes[%d].redirect_https", i), "the gateway has no HTTPS entrypoint to redirect to")
			}
		}
	}
	certs, cerr := buildCerts(cfg.Certs, g.opts.Now())
	if err := errors.Join(err, bad.err(), cerr); err != nil {
		return err
	}

	// Compile, reusing the state of every backend that stays.
	states := map[backendKey]*backendState{}
	poolOf := func(service, policy string, bs []Backend) *pool {
		sel, _ := newSelector(policy) // validated
		p := &pool{service: service, backends: make([]*backendState, len(bs)), sel: sel}
		for i, b := range bs {
			k := backendKey{b.ID, b.Addr}
			s := states[k]
			if s == nil {
				s = g.backends[k]
				if s == nil || s.kill.Err() != nil {
					s = newBackendState(g.ctx, b)
				}
				states[k] = s
			}
			p.backends[i] = s
		}
		return p
	}
	t := &table{tcp: map[int]*pool{}, udp: map[int]*pool{}, certs: certs}
	for _, p := range cfg.Published {
		m := t.tcp
		if protocolOf(p.Protocol) == ProtocolUDP {
			m = t.udp
		}
		m[p.Port] = poolOf(p.Service, p.Policy, p.Backends)
	}
	routes := make([]*route, len(cfg.Routes))
	for i, r := range cfg.Routes {
		host := strings.ToLower(r.Host)
		prefix := normalizePath(r.Path)
		routes[i] = &route{
			key: host + " " + prefix, service: r.Service, host: host, prefix: prefix,
			strip: r.StripPrefix, timeout: r.Timeout, redirect: r.RedirectHTTPS, hsts: r.HSTS,
			pool: poolOf(r.Service, r.Policy, r.Backends),
		}
	}
	t.router = newRouter(routes)

	// Open new ports before anything changes, so that a port in use fails
	// the whole update.
	newTCP, newUDP, err := g.openPorts(cfg.Published)
	if err != nil {
		return err
	}

	// Commit.
	for k, s := range states {
		g.backends[k] = s
		if !s.live && s.killTimer != nil && !s.draining.Load() {
			s.killTimer.Stop() // back before its drain ended
			s.killTimer = nil
		}
		s.live = true
	}
	var removed []*backendState
	for k, s := range g.backends {
		if _, ok := states[k]; !ok && s.live {
			s.live = false
			removed = append(removed, s)
		}
	}
	g.swap(t)
	// Nothing can pick a removed backend now; those with nothing in flight
	// are gone, the others drain.
	for _, s := range removed {
		g.startDrain(s)
	}
	g.collect()

	for port, p := range newTCP {
		g.tcpPorts[port] = p
		g.serveTCP(p)
	}
	for port, p := range newUDP {
		g.udpPorts[port] = p
		g.serveUDP(p)
	}
	for port, p := range g.tcpPorts {
		if t.tcp[port] == nil {
			p.close()
			delete(g.tcpPorts, port)
		}
	}
	for port, p := range g.udpPorts {
		if t.udp[port] == nil {
			p.close()
			delete(g.udpPorts, port)
		}
	}
	if len(removed) > 0 {
		g.log.Debug("config updated", "removed_backends", len(removed), "backends", len(states))
	}
	return nil
}

// startDrain starts the drain timer of s. Called with g.mu held.
func (g *Gateway) startDrain(s *backendState) {
	if s.killTimer != nil {
		return // Drain started it
	}
	s.killTimer = time.AfterFunc(g.opts.DrainTimeout, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.closed || (s.live && !s.draining.Load()) {
			return // closing, or back in the config
		}
		if n := s.inflight.Load(); n > 0 {
			g.log.Warn("drain timeout: cutting off backend", "backend", s.ID, "addr", s.Addr, "in_flight", n)
		}
		s.killCancel()
		s.pool.closeIdle()
		if !s.live {
			k := backendKey{s.ID, s.Addr}
			if g.backends[k] == s {
				delete(g.backends, k)
			}
		}
	})
}

// collect forgets removed backends with nothing in flight. Called with g.mu
// held, after the swap of the table that dropped them.
func (g *Gateway) collect() {
	for k, s := range g.backends {
		if !s.live && s.inflight.Load() == 0 {
			if s.killTimer != nil {
				s.killTimer.Stop()
			}
			s.killCancel()
			s.pool.closeIdle()
			delete(g.backends, k)
		}
	}
}

// Drain stops new traffic to every backend of the task backendID (a task may
// serve several ports) without a new config: its in-flight requests and
// connections continue until done or until Options.DrainTimeout. The
// backend stays drained until a config without it is in force. It reports
// whether the gateway knows the backend.
func (g *Gateway) Drain(backendID string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	found := false
	for _, s := range g.backends {
		if s.ID == backendID && s.live {
			found = true
			if !s.draining.Swap(true) {
				g.startDrain(s)
			}
		}
	}
	if found {
		// A fresh table pointer lets us wait out the goroutines that may have
		// read draining as false.
		g.swap(g.tbl.Load().clone())
	}
	return found
}

// InFlight returns how many HTTP requests, TCP connections and UDP sessions
// are proxied to the task backendID right now. After Update removed the
// backend (or Drain), it only goes down: the agent waits for zero before it
// signals the task.
func (g *Gateway) InFlight(backendID string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := int64(0)
	for _, s := range g.backends {
		if s.ID == backendID {
			n += s.inflight.Load()
		}
	}
	return int(n)
}

// Draining returns, sorted, the ids of the backends that no longer get new
// traffic (removed from the config, or drained) but still have requests,
// connections or sessions in flight.
func (g *Gateway) Draining() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, s := range g.backends {
		if (!s.live || s.draining.Load()) && s.inflight.Load() > 0 && !seen[s.ID] {
			seen[s.ID] = true
			out = append(out, s.ID)
		}
	}
	sort.Strings(out)
	return out
}

// Close stops the gateway: it closes every listener and cuts off every
// connection, then waits for its goroutines.
func (g *Gateway) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.cancel() // every backend's kill context ends: proxied traffic is cut off
	var errs []error
	for _, ep := range []*entrypoint{g.http, g.https} {
		if ep != nil {
			errs = append(errs, ep.close())
		}
	}
	for port, p := range g.tcpPorts {
		p.close()
		delete(g.tcpPorts, port)
	}
	for port, p := range g.udpPorts {
		p.close()
		delete(g.udpPorts, port)
	}
	for _, s := range g.backends {
		if s.killTimer != nil {
			s.killTimer.Stop()
		}
	}
	g.mu.Unlock()
	g.wg.Wait()    // the servers' accept loops are done: no new connections
	g.conns.Wait() // and the connections they had are closed
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("gateway: close: %w", err)
	}
	return nil
}

// ejectBackend applies passive health after a failed connection.
func (g *Gateway) ejectBackend(b *backendState, err error) {
	if cool, first := b.eject(g.now(), g.opts.EjectMin, g.opts.EjectMax); first {
		g.log.Warn("backend ejected", "backend", b.ID, "addr", b.Addr, "cool_off", cool, "err", err)
	}
}

// openPorts listens on the published ports of cfg that are not open yet.
// On error it closes what it opened.
func (g *Gateway) openPorts(pubs []Published) (map[int]*tcpPort, map[int]*udpPort, error) {
	newTCP, newUDP := map[int]*tcpPort{}, map[int]*udpPort{}
	fail := func(err error) (map[int]*tcpPort, map[int]*udpPort, error) {
		for _, p := range newTCP {
			p.close()
		}
		for _, p := range newUDP {
			p.close()
		}
		return nil, nil, err
	}
	for i, p := range pubs {
		addr := net.JoinHostPort(g.opts.BindAddr, strconv.Itoa(p.Port))
		if protocolOf(p.Protocol) == ProtocolUDP {
			if g.udpPorts[p.Port] != nil {
				continue
			}
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return fail(fmt.Errorf("gateway: published[%d] (service %q): %w", i, p.Service, err))
			}
			newUDP[p.Port] = newUDPPort(p.Port, pc.(*net.UDPConn))
			continue
		}
		if g.tcpPorts[p.Port] != nil {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fail(fmt.Errorf("gateway: published[%d] (service %q): %w", i, p.Service, err))
		}
		newTCP[p.Port] = &tcpPort{port: p.Port, ln: newLimitListener(ln, g.opts.MaxConns)}
	}
	return newTCP, newUDP, nil
}
