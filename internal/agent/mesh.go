package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/gateway"
)

// DefaultMeshBind is where published ports listen unless MeshConfig says
// otherwise: loopback, so that a node does not expose services to the
// network before its operator chooses to.
const DefaultMeshBind = "127.0.0.1"

// MeshAddrFile is the file in the agent's data directory where a running
// gateway writes the addresses its entrypoints listen on, one per line:
// "http HOST:PORT" and "https HOST:PORT" (a line only for an entrypoint that
// is on). It is removed when the gateway stops. Tools and tests that let
// the system pick the ports (":0") read the chosen ones here.
const MeshAddrFile = "mesh.addr"

// MeshConfig turns on the node's gateway: the routing mesh's published ports
// and its HTTP and HTTPS entrypoints.
type MeshConfig struct {
	// BindAddr is the host published ports listen on (default
	// DefaultMeshBind; "0.0.0.0" for every interface).
	BindAddr string
	// HTTPAddr is host:port of the HTTP entrypoint for routes; empty means
	// none.
	HTTPAddr string
	// HTTPSAddr is host:port of the HTTPS entrypoint for routes; empty
	// means none. It serves uploaded certificates by SNI (when the Manager
	// is a GatewayCertsSource) and, for route hosts none covers,
	// certificates from the gateway CA (when it is a GatewayCertSigner).
	HTTPSAddr string
	// DrainTimeout bounds how long requests to a removed backend may go on
	// (default gateway.DefaultDrainTimeout).
	DrainTimeout time.Duration
}

// EndpointsSource is an optional extra of a Manager: the stream of the
// cluster's routing state. An agent with a MeshConfig needs it.
type EndpointsSource interface {
	// Endpoints streams the routing state in full, again after every
	// change; the channel closes when the stream breaks or ctx ends.
	Endpoints(ctx context.Context) (<-chan api.Endpoints, error)
}

// Endpoints implements EndpointsSource.
func (m APIManager) Endpoints(ctx context.Context) (<-chan api.Endpoints, error) {
	return m.C.WatchEndpoints(ctx)
}

var _ EndpointsSource = APIManager{}

// startMesh opens the gateway if the agent has a MeshConfig.
func (a *Agent) startMesh() error {
	mc := a.cfg.Mesh
	if mc == nil {
		return nil
	}
	if _, ok := a.m.(EndpointsSource); !ok {
		return fmt.Errorf("%w: the manager has no endpoints stream for the mesh", ErrConfig)
	}
	bind := mc.BindAddr
	if bind == "" {
		bind = DefaultMeshBind
	}
	opts := gateway.Options{
		BindAddr:     bind,
		HTTPAddr:     mc.HTTPAddr,
		HTTPSAddr:    mc.HTTPSAddr,
		DrainTimeout: mc.DrainTimeout,
		Logger:       a.log.WithGroup("gateway"),
	}
	if signer, ok := a.m.(GatewayCertSigner); ok && mc.HTTPSAddr != "" {
		ci := &certIssuer{signer: signer, exact: a.mesh.routeHost, now: time.Now}
		opts.IssueCert = ci.issue
	}
	gw, err := gateway.New(opts)
	if err != nil {
		return fmt.Errorf("agent: mesh: %w", err)
	}
	a.gw.Store(gw)
	var lines []string
	attrs := []any{"bind", bind}
	if addr := gw.HTTPAddr(); addr != nil {
		lines = append(lines, "http "+addr.String())
		attrs = append(attrs, "http", addr.String())
	}
	if addr := gw.HTTPSAddr(); addr != nil {
		lines = append(lines, "https "+addr.String())
		attrs = append(attrs, "https", addr.String())
	}
	a.log.Info("mesh gateway listening", attrs...)
	if err := writeFileAtomic(filepath.Join(a.cfg.DataDir, MeshAddrFile), []byte(strings.Join(lines, "\n")+"\n")); err != nil {
		a.log.Warn("cannot write the mesh address file", "err", err)
	}
	return nil
}

// stopMesh closes the gateway.
func (a *Agent) stopMesh() {
	if gw := a.gw.Swap(nil); gw != nil {
		_ = os.Remove(filepath.Join(a.cfg.DataDir, MeshAddrFile))
		_ = gw.Close()
	}
}

// MeshHTTPAddr is the address of the gateway's HTTP entrypoint while Run
// runs, or nil.
func (a *Agent) MeshHTTPAddr() net.Addr {
	if gw := a.gw.Load(); gw != nil {
		return gw.HTTPAddr()
	}
	return nil
}

// MeshHTTPSAddr is the address of the gateway's HTTPS entrypoint while Run
// runs, or nil.
func (a *Agent) MeshHTTPSAddr() net.Addr {
	if gw := a.gw.Load(); gw != nil {
		return gw.HTTPSAddr()
	}
	return nil
}

// followEndpoints holds the endpoints stream open, reconnecting with
// back-off, and updates the gateway on every message. With an HTTPS
// entrypoint it also follows the uploaded certificates (followCertificates)
// until it returns.
func (a *Agent) followEndpoints(ctx context.Context) {
	gw := a.gw.Load()
	src, _ := a.m.(EndpointsSource)
	if (gw == nil && a.dns.Load() == nil) || src == nil {
		return
	}
	if certs, ok := a.m.(GatewayCertsSource); ok && gw != nil && gw.HTTPSAddr() != nil {
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			a.followCertificates(cctx, gw, certs)
		}()
		defer func() {
			cancel()
			<-done
		}()
	}
	limit := logLimiter{every: 30 * time.Second}
	followStream(ctx, a, "endpoints", &limit, src.Endpoints, nil, func(e api.Endpoints) {
		if !e.Unchanged {
			if gw != nil {
				a.applyEndpoints(gw, e)
			}
			a.updateDNS(e)
		}
		a.ackEndpoints(e.Revision, !e.Unchanged)
	})
}

// applyEndpoints updates the gateway with the routing state e and the
// uploaded certificates last received (see updateGatewayLocked).
func (a *Agent) applyEndpoints(gw *gateway.Gateway, e api.Endpoints) {
	a.mesh.mu.Lock()
	defer a.mesh.mu.Unlock()
	a.mesh.last = e
	a.mesh.setHosts(e)
	a.updateGatewayLocked(gw)
}

// updateGatewayLocked gives the gateway the last routing state and
// certificates; a.mesh.mu is held. If the whole config is refused (a port
// that cannot be opened, say), services are added one at a time and each
// one the gateway refuses is left out and logged, so that one bad service
// does not freeze the routing of all the others.
func (a *Agent) updateGatewayLocked(gw *gateway.Gateway) {
	e := a.mesh.last
	cfg := meshConfig(e.Services)
	cfg.Certs = a.mesh.certs
	err := gw.Update(cfg)
	if err == nil {
		a.setGatewayRefused(nil)
		return
	}
	a.log.Warn("gateway refused the routing state; applying it service by service", "err", err)
	ok := gateway.Config{Certs: a.mesh.certs}
	var refused []api.GatewayRefusal
	defer func() { a.setGatewayRefused(refused) }()
	for _, se := range e.Services {
		one := meshConfig([]api.ServiceEndpoints{se})
		try := gateway.Config{
			Published: append(ok.Published[:len(ok.Published):len(ok.Published)], one.Published...),
			Routes:    append(ok.Routes[:len(ok.Routes):len(ok.Routes)], one.Routes...),
			Certs:     ok.Certs,
		}
		if err := gw.Update(try); err != nil {
			a.log.Error("gateway refused a service; it gets no traffic on this node", "service", se.Service, "err", err)
			refused = append(refused, api.GatewayRefusal{Service: se.Service, Error: err.Error()})
			continue
		}
		ok = try
	}
	if err := gw.Update(ok); err != nil {
		a.log.Error("gateway refused the services it accepted one by one", "err", err)
	}
}

// meshConfig translates the endpoints of services into a gateway config.
func meshConfig(services []api.ServiceEndpoints) gateway.Config {
	var cfg gateway.Config
	backends := func(se api.ServiceEndpoints, port string) []gateway.Backend {
		var out []gateway.Backend
		for _, b := range se.Backends {
			if hp, ok := b.Ports[port]; ok && hp > 0 {
				out = append(out, gateway.Backend{ID: b.TaskID, Addr: net.JoinHostPort(b.Host, strconv.Itoa(hp))})
			}
		}
		return out
	}
	for _, se := range services {
		for _, p := range se.Ports {
			if p.Publish == 0 || (p.Mode != "" && p.Mode != api.PublishIngress) {
				continue
			}
			cfg.Published = append(cfg.Published, gateway.Published{
				Service: se.Service, Port: p.Publish, Protocol: p.Protocol,
				Backends: backends(se, p.Name), Policy: se.LoadBalancing,
			})
		}
		for _, r := range se.Routes {
			cfg.Routes = append(cfg.Routes, gateway.Route{
				Service: se.Service, Host: r.Host, Path: r.Path, StripPrefix: r.StripPrefix,
				Timeout: r.Timeout.D(), RedirectHTTPS: r.HTTPSRedirect, HSTS: r.HSTS,
				Backends: backends(se, r.Port), Policy: se.LoadBalancing,
			})
		}
	}
	return cfg
}

// drainTask takes a task out of every gateway before it is stopped: out of
// this node's at once (no new request reaches it), then it waits, within
// grace, until its in-flight requests and connections here are done and
// until every gateway of the cluster has acknowledged a routing state at or
// after rev (the task's revision when its desired state became shutdown)
// and has nothing in flight to it (waitRemoteDrain).
func (a *Agent) drainTask(id string, rev int64, grace time.Duration) {
	deadline := time.Now().Add(grace)
	if gw := a.gw.Load(); gw != nil {
		// Drain reports false when the routing state already removed the
		// task (the endpoints stream often wins the race with the
		// assignment): its requests and connections may still be in
		// flight all the same, so wait for them either way.
		gw.Drain(id)
		t := time.NewTicker(10 * time.Millisecond)
		for gw.InFlight(id) > 0 && time.Now().Before(deadline) {
			<-t.C
		}
		t.Stop()
		if n := gw.InFlight(id); n > 0 {
			a.log.Warn("task still has requests in flight after its grace period; stopping it anyway", "task", id, "in_flight", n)
			return
		}
	}
	a.waitRemoteDrain(id, rev, deadline)
}
