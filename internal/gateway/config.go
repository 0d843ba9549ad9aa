package gateway

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
)

// Protocols of a published port.
const (
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
)

// Load-balancing policies.
const (
	// PolicyRoundRobin sends each new request or connection to the next
	// backend in turn. It is the default.
	PolicyRoundRobin = "round-robin"
	// PolicyLeastOutstanding picks two backends at random and sends to the
	// one with fewer requests in flight (power of two choices).
	PolicyLeastOutstanding = "least-outstanding"
)

// ErrInvalidConfig is wrapped by every error Update returns for a config it
// rejects. The config in force is unchanged when it is returned.
var ErrInvalidConfig = errors.New("gateway: invalid config")

// ConfigError is one thing wrong with a Config. Field is its path, such as
// "routes[2].host"; Update joins several of them with errors.Join.
type ConfigError struct {
	Field  string
	Reason string
}

// Error says which field is wrong and why.
func (e *ConfigError) Error() string {
	return fmt.Sprintf("gateway: %s: %s", e.Field, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

// Backend is one place traffic can go: a task's address.
type Backend struct {
	// ID is the task id. Counters and draining are per ID (and address).
	ID string
	// Addr is host:port.
	Addr string
}

// Config is the whole desired routing state of a gateway.
type Config struct {
	// Published are ports the gateway listens on (at Options.BindAddr) and
	// proxies at the transport level.
	Published []Published
	// Routes are HTTP routes served on the HTTP and HTTPS entrypoints.
	Routes []Route
	// Certs are the certificates the HTTPS entrypoint serves, chosen by SNI.
	Certs []Cert
}

// Published is a port published by a service.
type Published struct {
	// Service is the service's name, for errors and logs.
	Service string
	// Port is the port the gateway listens on, 1-65535.
	Port int
	// Protocol is ProtocolTCP (default) or ProtocolUDP.
	Protocol string
	// Backends are the service's healthy tasks, on the published port's
	// target port.
	Backends []Backend
	// Policy is PolicyRoundRobin (default) or PolicyLeastOutstanding.
	Policy string
}

// Route is an HTTP route: requests for Host whose path starts with Path go to
// Backends.
type Route struct {
	// Service is the service's name, for errors and logs.
	Service string
	// Host is an exact host name ("shop.example.test"), a wildcard of one
	// label ("*.example.test" matches "a.example.test" but neither
	// "example.test" nor "a.b.example.test"), or empty for any host. An
	// exact host is preferred to a wildcard, a wildcard to an empty host.
	Host string
	// Path is a path prefix, matched on whole segments: "/orders" matches
	// "/orders" and "/orders/1" but not "/ordersx". Default "/". A trailing
	// slash is ignored. Among the routes of the chosen host the longest
	// matching prefix wins.
	Path string
	// StripPrefix removes Path from the request path before proxying.
	StripPrefix bool
	// Timeout limits a request from the moment it is routed until its
	// response is fully sent; for a WebSocket (an upgrade) it limits only the
	// wait for the upgrade response. Zero means no limit.
	Timeout time.Duration
	// RedirectHTTPS answers requests on the HTTP entrypoint with a
	// permanent redirect to the HTTPS entrypoint.
	RedirectHTTPS bool
	// HSTS adds Strict-Transport-Security to responses sent over HTTPS.
	HSTS bool
	// Backends are the service's healthy tasks.
	Backends []Backend
	// Policy is PolicyRoundRobin (default) or PolicyLeastOutstanding.
	Policy string
}

// Cert is a certificate and its key, served to clients that ask for one of
// Names by SNI.
type Cert struct {
	// Names are host names (or "*.domain" wildcards) this certificate is
	// served for. Each must be covered by the certificate. Empty means the
	// certificate's own DNS names.
	Names []string
	// CertPEM is the certificate chain, leaf first.
	CertPEM []byte
	// KeyPEM is the private key.
	KeyPEM []byte
}

// MaxBackends is the most backends one published port or route may have.
const MaxBackends = 10000

// invalid collects ConfigErrors.
type invalid []error

func (v *invalid) add(field, format string, args ...any) {
	*v = append(*v, &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

func (v invalid) err() error { return errors.Join(v...) }

// validate checks everything in cfg that does not need the clock or the
// listeners. reserved are TCP ports taken by the entrypoints.
func validate(cfg *Config, reserved map[int]string) error {
	var bad invalid
	type portKey struct {
		proto string
		port  int
	}
	ports := map[portKey]int{}
	for i, p := range cfg.Published {
		at := fmt.Sprintf("published[%d]", i)
		if p.Service == "" {
			bad.add(at+".service", "service name is empty")
		}
		if p.Port < 1 || p.Port > 65535 {
			bad.add(at+".port", "port %d is not between 1 and 65535", p.Port)
		}
		proto := protocolOf(p.Protocol)
		if proto != ProtocolTCP && proto != ProtocolUDP {
			bad.add(at+".protocol", "protocol %q is neither tcp nor udp", p.Protocol)
		}
		checkPolicy(&bad, at+".policy", p.Policy)
		checkBackends(&bad, at+".backends", p.Backends)
		k := portKey{proto, p.Port}
		if j, dup := ports[k]; dup {
			other := cfg.Published[j]
			if other.Service == p.Service {
				bad.add(at+".port", "service %q publishes %s port %d twice (also published[%d])", p.Service, proto, p.Port, j)
			} else {
				bad.add(at+".port", "services %q and %q both publish %s port %d (published[%d] and published[%d])",
					other.Service, p.Service, proto, p.Port, j, i)
			}
			continue
		}
		ports[k] = i
		if ep, ok := reserved[p.Port]; ok && proto == ProtocolTCP {
			bad.add(at+".port", "service %q publishes tcp port %d, which is the gateway's %s entrypoint", p.Service, p.Port, ep)
		}
	}

	type routeKey struct{ host, path string }
	routes := map[routeKey]int{}
	for i, r := range cfg.Routes {
		at := fmt.Sprintf("routes[%d]", i)
		if r.Service == "" {
			bad.add(at+".service", "service name is empty")
		}
		if err := checkHost(r.Host); err != nil {
			bad.add(at+".host", "%v", err)
		}
		if err := checkPath(r.Path); err != nil {
			bad.add(at+".path", "%v", err)
		}
		if r.Timeout < 0 {
			bad.add(at+".timeout", "timeout %s is negative", r.Timeout)
		}
		checkPolicy(&bad, at+".policy", r.Policy)
		checkBackends(&bad, at+".backends", r.Backends)
		k := routeKey{strings.ToLower(r.Host), normalizePath(r.Path)}
		if j, dup := routes[k]; dup {
			other := cfg.Routes[j]
			where := describeRoute(k.host, k.path)
			if other.Service == r.Service {
				bad.add(at, "service %q has route %s twice (also routes[%d])", r.Service, where, j)
			} else {
				bad.add(at, "route %s of service %q clashes with the same route of service %q (routes[%d])",
					where, r.Service, other.Service, j)
			}
			continue
		}
		routes[k] = i
	}
	for i, c := range cfg.Certs {
		at := fmt.Sprintf("certs[%d]", i)
		for j, n := range c.Names {
			if err := checkHost(n); err != nil || n == "" {
				if err == nil {
					err = errors.New("name is empty")
				}
				bad.add(fmt.Sprintf("%s.names[%d]", at, j), "%v", err)
			}
		}
	}
	return bad.err()
}

func describeRoute(host, path string) string {
	if host == "" {
		host = "(any host)"
	}
	return host + path
}

func checkPolicy(bad *invalid, at, p string) {
	if _, err := newSelector(p); err != nil {
		bad.add(at, "%v", err)
	}
}

func checkBackends(bad *invalid, at string, bs []Backend) {
	if len(bs) > MaxBackends {
		bad.add(at, "%d backends; the limit is %d", len(bs), MaxBackends)
		return
	}
	seen := make(map[string]int, len(bs))
	for i, b := range bs {
		bat := fmt.Sprintf("%s[%d]", at, i)
		if b.ID == "" {
			bad.add(bat+".id", "backend id is empty")
		}
		if err := checkAddr(b.Addr); err != nil {
			bad.add(bat+".addr", "%v", err)
		}
		if j, dup := seen[b.ID]; dup && b.ID != "" {
			bad.add(bat+".id", "backend %q is listed twice (also [%d])", b.ID, j)
		}
		seen[b.ID] = i
	}
}

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q is not host:port", addr)
	}
	if host == "" {
		return fmt.Errorf("address %q has no host", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("address %q has no valid port", addr)
	}
	return nil
}

// checkHost accepts "", a DNS name, or "*." + a DNS name of at least two
// labels: the one check the API runs at deploy too (api.CheckRouteHost).
func checkHost(h string) error { return api.CheckRouteHost(h) }

func checkPath(p string) error {
	if p == "" {
		return nil
	}
	if p[0] != '/' {
		return fmt.Errorf("path %q does not start with /", p)
	}
	if strings.ContainsAny(p, "?# \t\r\n") {
		return fmt.Errorf("path %q contains ?, #, or white space", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("path %q contains a . or .. segment", p)
		}
	}
	return nil
}

// normalizePath makes "" and "/" the root and drops a trailing slash.
func normalizePath(p string) string {
	p = strings.TrimRight(p, "/")
	if p == "" {
		return "/"
	}
	return p
}

func protocolOf(p string) string {
	if p == "" {
		return ProtocolTCP
	}
	return strings.ToLower(p)
}
