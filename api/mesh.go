package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// Port publishing modes (PortSpec.Mode).
const (
	// PublishIngress publishes a port on every node's gateway, which
	// balances across the healthy running tasks of the service (the routing
	// mesh). It is the default when Publish is set.
	PublishIngress = "ingress"
	// PublishHost binds the published port on each task's own node, without
	// the mesh: the scheduler gives the task exactly that host port, so a
	// node runs at most one task of the service per host-mode port, and the
	// gateways do not listen on it. The port may lie outside the node's task
	// port range.
	PublishHost = "host"
)

// Load-balancing policies (ServiceSpec.LoadBalancing).
const (
	// LBRoundRobin sends each new request or connection to the next task in
	// turn. It is the default.
	LBRoundRobin = "round-robin"
	// LBLeastOutstanding picks two tasks at random and sends to the one with
	// fewer requests in flight.
	LBLeastOutstanding = "least-outstanding"
)

// MaxRoutes is the most HTTP routes one service may declare.
const MaxRoutes = 64

// RouteSpec is an HTTP route of a service: requests on a gateway's HTTP or
// HTTPS entrypoint for Host whose path starts with Path go to the service's
// healthy tasks, on the named port.
type RouteSpec struct {
	// Host is an exact host name, a one-label wildcard ("*.example.test"),
	// or empty for any host.
	Host string `json:"host,omitempty"`
	// Path is a path prefix matched on whole segments. Default "/".
	Path string `json:"path,omitempty"`
	// Port is the name of one of the task's tcp ports.
	Port string `json:"port"`
	// StripPrefix removes Path from the request path before proxying.
	StripPrefix bool `json:"strip_prefix,omitempty"`
	// Timeout limits a request from routing until its response is sent.
	// Zero means no limit.
	Timeout Duration `json:"timeout,omitempty"`
	// HTTPSRedirect answers plain-HTTP requests with a redirect to HTTPS.
	HTTPSRedirect bool `json:"https_redirect,omitempty"`
	// HSTS adds Strict-Transport-Security to HTTPS responses.
	HSTS bool `json:"hsts,omitempty"`
}

// ServiceEndpoints is what the routing mesh and service discovery need to
// know about one service: its ports and routes, and where its healthy
// running tasks are. Every service is listed, with or without ports.
type ServiceEndpoints struct {
	// Service is the service's name.
	Service string `json:"service"`
	// LoadBalancing is the service's policy (LBRoundRobin or
	// LBLeastOutstanding).
	LoadBalancing string `json:"load_balancing"`
	// Ports are all the task's ports, as in the spec: the gateway listens
	// for those published in ingress mode (Publish set, Mode
	// PublishIngress), DNS gives every one an SRV record.
	Ports []PortSpec `json:"ports,omitempty"`
	// Routes are the service's HTTP routes.
	Routes []RouteSpec `json:"routes,omitempty"`
	// Backends are the service's running tasks whose health is healthy or
	// none, sorted by task id.
	Backends []EndpointBackend `json:"backends"`
}

// EndpointBackend is one running, healthy task of a service.
type EndpointBackend struct {
	// TaskID is the task's id.
	TaskID string `json:"task"`
	// NodeID is the node the task runs on.
	NodeID string `json:"node"`
	// Host is the node's address, or 127.0.0.1 when the node has none.
	Host string `json:"host"`
	// Ports maps the task's port names to their host ports.
	Ports map[string]int `json:"ports"`
}

// Endpoints is one message of the endpoints stream: the whole routing state
// of the cluster at store revision Revision, sorted by service name.
type Endpoints struct {
	// Revision is the store revision the routing state was read at.
	Revision int64 `json:"revision"`
	// Services are, per service, its published ports, routes and healthy running tasks.
	Services []ServiceEndpoints `json:"services"`
	// Unchanged marks a message that only moves Revision on: the routing
	// state is the one last sent, and Services is empty. Agents acknowledge
	// the revision (GatewayAck) without touching their gateway.
	Unchanged bool `json:"unchanged,omitempty"`
}

// normalizeMesh fills in the routing defaults of s.
func (s *ServiceSpec) normalizeMesh() {
	if s.LoadBalancing == "" {
		s.LoadBalancing = LBRoundRobin
	}
	for i := range s.Task.Ports {
		p := &s.Task.Ports[i]
		if p.Publish != 0 && p.Mode == "" {
			p.Mode = PublishIngress
		}
	}
	for i := range s.Routes {
		if s.Routes[i].Path == "" {
			s.Routes[i].Path = "/"
		}
	}
}

// validateMesh checks published ports, routes and the load-balancing policy.
func (s *ServiceSpec) validateMesh(add func(string, string, ...any)) {
	switch s.LoadBalancing {
	case LBRoundRobin, LBLeastOutstanding:
	default:
		add("load_balancing", "unknown policy %q: use %s or %s", truncate(s.LoadBalancing), LBRoundRobin, LBLeastOutstanding)
	}
	type pubKey struct {
		proto string
		port  int
	}
	published := map[pubKey]int{}
	ports := map[string]PortSpec{}
	for i, p := range s.Task.Ports {
		f := fmt.Sprintf("task.ports[%d]", i)
		ports[p.Name] = p
		switch {
		case p.Publish == 0:
			if p.Mode != "" {
				add(f+".mode", "is only for a published port: set publish")
			}
			continue
		case p.Publish < 1 || p.Publish > 65535:
			add(f+".publish", "port %d is not between 1 and 65535", p.Publish)
		}
		switch p.Mode {
		case PublishIngress, PublishHost:
		default:
			add(f+".mode", "unknown mode %q: use %s or %s", truncate(p.Mode), PublishIngress, PublishHost)
		}
		if use := BerthPortUse(p.Protocol, p.Publish); use != "" {
			add(f+".publish", "%s port %d is Berth's own: %s; publish another port", protoOr(p.Protocol), p.Publish, use)
		}
		k := pubKey{p.Protocol, p.Publish}
		if j, dup := published[k]; dup {
			add(f+".publish", "%s port %d is already published by task.ports[%d]", p.Protocol, p.Publish, j)
		}
		published[k] = i
	}
	if len(s.Routes) > MaxRoutes {
		add("routes", "at most %d routes", MaxRoutes)
	}
	seen := map[string]int{}
	for i, r := range s.Routes {
		f := fmt.Sprintf("routes[%d]", i)
		if err := CheckRouteHost(r.Host); err != nil {
			add(f+".host", "%s", err.Error())
		}
		if !strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, "?# \t\r\n") || strings.Contains(r.Path, "//") ||
			strings.Contains("/"+r.Path+"/", "/../") || strings.Contains("/"+r.Path+"/", "/./") {
			add(f+".path", "%q is not a clean path prefix starting with '/'", truncate(r.Path))
		}
		p, ok := ports[r.Port]
		switch {
		case r.Port == "":
			add(f+".port", "is required: name one of task.ports")
		case !ok:
			add(f+".port", "no port named %q in task.ports", truncate(r.Port))
		case p.Protocol == "udp":
			add(f+".port", "port %q is udp; HTTP routes need tcp", r.Port)
		}
		if r.Timeout < 0 {
			add(f+".timeout", "must not be negative (got %s)", r.Timeout)
		}
		k := RouteKey(r)
		if j, dup := seen[k]; dup {
			add(f, "host %q and path %q are already routed by routes[%d]", r.Host, r.Path, j)
		}
		seen[k] = i
	}
}

// RouteKey is what two routes clash on: the lower-cased host and the path
// without a trailing slash.
func RouteKey(r RouteSpec) string {
	p := strings.TrimRight(r.Path, "/")
	if p == "" {
		p = "/"
	}
	return strings.ToLower(r.Host) + " " + p
}

func protoOr(p string) string {
	if p == "" {
		return "tcp"
	}
	return p
}

// CheckRouteHost returns why h cannot be a route host (nil when it can):
// "" (any host), a DNS name, or "*." and a DNS name of at least two labels.
// Labels are 1 to 63 letters, digits, '-' (not first or last) and '_'. The
// API checks routes with it at deploy and the gateway checks its config with
// it, so that the API accepts no route the gateway would refuse.
func CheckRouteHost(h string) error {
	if h == "" {
		return nil
	}
	name := h
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		name = rest
		if !strings.Contains(name, ".") {
			return fmt.Errorf("wildcard host %q must have at least two labels after \"*.\"", truncate(h))
		}
	}
	if len(name) > 253 {
		return fmt.Errorf("host %q is longer than 253 characters", truncate(h))
	}
	for _, l := range strings.Split(name, ".") {
		if !validHostLabel(l) {
			return fmt.Errorf("host %q is not a DNS name (a wildcard is allowed only as the whole first label, as in *.example.test)", truncate(h))
		}
	}
	return nil
}

func validHostLabel(l string) bool {
	if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// WatchEndpoints follows GET /api/v1/endpoints: the cluster's routing state,
// in full, again after every change. The channel holds only the newest
// message not yet taken, and is closed when the stream ends (ctx done, the
// server went away or sent something malformed); the caller reconnects.
func (c *Client) WatchEndpoints(ctx context.Context) (<-chan Endpoints, error) {
	resp, err := c.do(ctx, http.MethodGet, "/endpoints", nil, nil, "")
	if err != nil {
		return nil, err
	}
	ch := make(chan Endpoints, 1)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		err := readNDJSON(resp.Body, MaxAssignmentsBytes, func(line []byte) error {
			var e Endpoints
			if err := json.Unmarshal(line, &e); err != nil {
				return fmt.Errorf("%w: decoding endpoints: %w", ErrResponse, err)
			}
			select { // only the newest set matters
			case <-ch:
			default:
			}
			ch <- e
			return nil
		})
		switch {
		case ctx.Err() != nil:
		case err != nil:
			c.log.Warn("endpoints stream broke", "err", err)
		default:
			c.log.Info("endpoints stream closed by the server")
		}
	}()
	return ch, nil
}
