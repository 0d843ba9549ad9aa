package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/gateway"
)

// DefaultMeshBind is where published ports listen unless MeshConfig says
// otherwise: loopback, so that a node does not expose services to the
// network before its operator chooses to.
const DefaultMeshBind = "127.0.0.1"

// MeshConfig turns on the node's gateway: the routing mesh's published ports
// and its HTTP entrypoint.
type MeshConfig struct {
	// BindAddr is the host published ports listen on (default
	// DefaultMeshBind; "0.0.0.0" for every interface).
	BindAddr string
	// HTTPAddr is host:port of the HTTP entrypoint for routes; empty means
	// none.
	HTTPAddr string
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
	gw, err := gateway.New(gateway.Options{
		BindAddr:     bind,
		HTTPAddr:     mc.HTTPAddr,
		DrainTimeout: mc.DrainTimeout,
		Logger:       a.log.WithGroup("gateway"),
	})
	if err != nil {
		return fmt.Errorf("agent: mesh: %w", err)
	}
	a.gw.Store(gw)
	return nil
}

// stopMesh closes the gateway.
func (a *Agent) stopMesh() {
	if gw := a.gw.Swap(nil); gw != nil {
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

// followEndpoints holds the endpoints stream open, reconnecting with
// back-off, and updates the gateway on every message.
func (a *Agent) followEndpoints(ctx context.Context) {
	gw := a.gw.Load()
	src, _ := a.m.(EndpointsSource)
	if gw == nil || src == nil {
		return
	}
	var limit logLimiter
	limit.every = 30 * time.Second
	bo := newBackoff(a.retryMin, 5*time.Second)
	for ctx.Err() == nil {
		ch, err := src.Endpoints(ctx)
		if err != nil {
			if ctx.Err() == nil {
				limit.log(a.log, "endpoints stream failed", err)
				sleepCtx(ctx, bo.next())
			}
			continue
		}
	stream:
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-ch:
				if !ok {
					break stream
				}
				bo.reset()
				limit.ok()
				a.applyEndpoints(gw, e)
			}
		}
		if ctx.Err() == nil {
			limit.log(a.log, "endpoints stream closed; reconnecting", errors.New("stream closed"))
			sleepCtx(ctx, bo.next())
		}
	}
}

// applyEndpoints updates the gateway. If the whole config is refused (a
// port that cannot be opened, say), services are added one at a time and
// each one the gateway refuses is left out and logged, so that one bad
// service does not freeze the routing of all the others.
func (a *Agent) applyEndpoints(gw *gateway.Gateway, e api.Endpoints) {
	cfg := meshConfig(e.Services)
	err := gw.Update(cfg)
	if err == nil {
		return
	}
	a.log.Warn("gateway refused the routing state; applying it service by service", "err", err)
	var ok gateway.Config
	for _, se := range e.Services {
		one := meshConfig([]api.ServiceEndpoints{se})
		try := gateway.Config{
			Published: append(ok.Published[:len(ok.Published):len(ok.Published)], one.Published...),
			Routes:    append(ok.Routes[:len(ok.Routes):len(ok.Routes)], one.Routes...),
		}
		if err := gw.Update(try); err != nil {
			a.log.Error("gateway refused a service; it gets no traffic on this node", "service", se.Service, "err", err)
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

// drainTask takes a task out of this node's gateway before it is stopped:
// no new request reaches it, and the wait ends when its in-flight requests
// and connections are done or grace has passed. Gateways of other nodes
// learn of the stop from the endpoints stream (the task's desired state),
// but the agent does not wait for them.
func (a *Agent) drainTask(id string, grace time.Duration) {
	gw := a.gw.Load()
	if gw == nil || !gw.Drain(id) {
		return
	}
	deadline := time.Now().Add(grace)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for gw.InFlight(id) > 0 && time.Now().Before(deadline) {
		<-t.C
	}
	if n := gw.InFlight(id); n > 0 {
		a.log.Warn("task still has requests in flight after its grace period; stopping it anyway", "task", id, "in_flight", n)
	}
}
