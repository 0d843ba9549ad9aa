package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
)

// checkMeshClash rejects spec if it publishes a port or routes a host and
// path that another service already does. It returns the revision it listed
// the services at (0 when spec claims nothing and no list was needed): the
// write of spec must be guarded by it (Collection.TxnUnchangedSince), so
// that two deploys racing for the same port cannot both pass (ADR 0019).
func (s *Server) checkMeshClash(ctx context.Context, spec api.ServiceSpec) (int64, error) {
	type pubKey struct {
		proto string
		port  int
	}
	published := map[pubKey]bool{}
	routes := map[string]bool{}
	for _, p := range spec.Task.Ports {
		if p.Publish != 0 {
			published[pubKey{p.Protocol, p.Publish}] = true
		}
	}
	for _, r := range spec.Routes {
		routes[api.RouteKey(r)] = true
	}
	if len(published) == 0 && len(routes) == 0 {
		return 0, nil
	}
	svcs, rev, err := s.st.Services.List(ctx)
	if err != nil {
		return 0, err
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Spec.Name < svcs[j].Spec.Name })
	clash := func(field, format string, args ...any) error {
		return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict, Field: field, Message: fmt.Sprintf(format, args...)}
	}
	for _, other := range svcs {
		if other.Spec.Name == spec.Name {
			continue
		}
		for _, op := range other.Spec.Task.Ports {
			if op.Publish == 0 || !published[pubKey{op.Protocol, op.Publish}] {
				continue
			}
			for i, p := range spec.Task.Ports {
				if p.Publish == op.Publish && p.Protocol == op.Protocol {
					return 0, clash(fmt.Sprintf("task.ports[%d].publish", i), "%s port %d is already published by service %s", p.Protocol, p.Publish, other.Spec.Name)
				}
			}
		}
		for _, or := range other.Spec.Routes {
			if !routes[api.RouteKey(or)] {
				continue
			}
			for i, r := range spec.Routes {
				if api.RouteKey(r) == api.RouteKey(or) {
					return 0, clash(fmt.Sprintf("routes[%d]", i), "host %q and path %q are already routed to service %s", r.Host, r.Path, other.Spec.Name)
				}
			}
		}
	}
	return rev, nil
}

// checkBerthPorts refuses a spec that publishes a port Berth itself listens
// on somewhere: a manager's API or etcd peer port, or a port a node's agent
// reported (its gateway's entrypoints, DNS, log server). The gateway could
// not open such a port (ADR 0029); the defaults are refused by
// ServiceSpec.Validate already.
func (s *Server) checkBerthPorts(ctx context.Context, spec api.ServiceSpec) error {
	var pub []int
	for i, p := range spec.Task.Ports {
		if p.Publish != 0 {
			pub = append(pub, i)
		}
	}
	if len(pub) == 0 {
		return nil
	}
	nodes, _, err := s.st.Nodes.List(ctx)
	if err != nil {
		return err
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Hostname < nodes[j].Hostname })
	recs, err := s.st.ManagerRecords(ctx)
	if err != nil {
		return err
	}
	type taken struct {
		use, where string
	}
	ports := map[string]taken{}
	key := func(proto string, port int) string {
		if proto == "" {
			proto = "tcp"
		}
		return fmt.Sprintf("%s/%d", proto, port)
	}
	for _, m := range recs {
		for _, u := range []struct{ url, use string }{{m.APIURL, "the manager's API"}, {m.PeerURL, "etcd's peer port"}} {
			if pu, err := url.Parse(u.url); err == nil {
				if p, err := strconv.Atoi(pu.Port()); err == nil {
					ports[key("tcp", p)] = taken{u.use, "manager " + m.ID}
				}
			}
		}
	}
	for _, n := range nodes {
		for _, rp := range n.ReservedPorts {
			if _, ok := ports[key(rp.Protocol, rp.Port)]; !ok {
				ports[key(rp.Protocol, rp.Port)] = taken{rp.Use, "node " + n.Hostname}
			}
		}
	}
	for _, i := range pub {
		p := spec.Task.Ports[i]
		if t, ok := ports[key(p.Protocol, p.Publish)]; ok {
			return invalid(fmt.Sprintf("task.ports[%d].publish", i), "%s port %d is Berth's own on %s: %s; publish another port",
				protoName(p.Protocol), p.Publish, t.where, t.use)
		}
	}
	return nil
}

func protoName(p string) string {
	if p == "" {
		return "tcp"
	}
	return p
}

// backendTask reports whether t should receive traffic: it runs, is meant to
// keep running, and its health is healthy or it has no check.
func backendTask(t *api.Task) bool {
	if t.Status.State != api.TaskRunning || t.DesiredState != api.TaskRunning {
		return false
	}
	switch t.Status.Health {
	case api.HealthHealthy, api.HealthNone, "":
		return true
	}
	return false
}

// meshState is what the endpoints stream is computed from.
type meshState struct {
	services map[string]api.Service
	tasks    map[string]api.Task
	nodes    map[string]api.Node
}

// endpoints computes the routing and discovery state: every service, with
// all its task ports (the gateway picks the published ones, DNS names them
// all), its routes and its healthy running tasks.
func (m *meshState) endpoints(rev int64) api.Endpoints {
	byService := map[string][]api.EndpointBackend{}
	nodes := make([]api.Node, 0, len(m.nodes))
	for _, n := range m.nodes {
		nodes = append(nodes, n)
	}
	multi := api.MultiHost(nodes)
	for _, t := range m.tasks {
		if !backendTask(&t) {
			continue
		}
		// A task on a node whose address other machines cannot reach gets
		// no traffic: gateways elsewhere would dial their own loopback
		// (`berth node ls` flags the node).
		host := "127.0.0.1"
		if n, ok := m.nodes[t.NodeID]; ok {
			h, usable := api.MeshHost(n, multi)
			if !usable {
				continue
			}
			host = h
		}
		byService[t.ServiceName] = append(byService[t.ServiceName], api.EndpointBackend{
			TaskID: t.ID, NodeID: t.NodeID, Host: host, Ports: t.Ports})
	}
	out := api.Endpoints{Revision: rev, Services: []api.ServiceEndpoints{}}
	for _, svc := range m.services {
		se := api.ServiceEndpoints{Service: svc.Spec.Name, LoadBalancing: svc.Spec.LoadBalancing,
			Ports: svc.Spec.Task.Ports, Routes: svc.Spec.Routes}
		se.Backends = byService[svc.Spec.Name]
		if se.Backends == nil {
			se.Backends = []api.EndpointBackend{}
		}
		sort.Slice(se.Backends, func(i, j int) bool { return se.Backends[i].TaskID < se.Backends[j].TaskID })
		out.Services = append(out.Services, se)
	}
	sort.Slice(out.Services, func(i, j int) bool { return out.Services[i].Service < out.Services[j].Service })
	return out
}

// listMesh reads services, tasks and nodes, and returns the revision of
// each list, for its watch.
func (s *Server) listMesh(ctx context.Context) (*meshState, [3]int64, error) {
	m := &meshState{services: map[string]api.Service{}, tasks: map[string]api.Task{}, nodes: map[string]api.Node{}}
	svcs, r1, err := s.st.Services.List(ctx)
	if err != nil {
		return nil, [3]int64{}, err
	}
	tasks, r2, err := s.st.Tasks.List(ctx)
	if err != nil {
		return nil, [3]int64{}, err
	}
	nodes, r3, err := s.st.Nodes.List(ctx)
	if err != nil {
		return nil, [3]int64{}, err
	}
	for _, v := range svcs {
		m.services[v.Spec.Name] = v
	}
	for _, t := range tasks {
		if !t.Status.State.Terminal() {
			m.tasks[t.ID] = t
		}
	}
	for _, n := range nodes {
		m.nodes[n.ID] = n
	}
	return m, [3]int64{r1, r2, r3}, nil
}

// streamEndpoints streams the cluster's routing state as NDJSON: in full
// at once, then again after every change (the first change after a quiet
// spell at once, later ones within AssignmentDebounce batched), until the
// client goes away.
func (s *Server) streamEndpoints(w http.ResponseWriter, r *http.Request) error {
	return s.follow(w, r, func(ctx context.Context, changes chan<- change) (func() any, error) {
		m, revs, err := s.listMesh(ctx)
		if err != nil {
			return nil, err
		}
		// A message's Revision is the revision of the task writes it
		// includes: every task write at or before it is in the message. It
		// is taken from the task list and the task watch only, which are in
		// revision order, not from the service and node watches, whose
		// events may arrive before or after the tasks' — a message stamped
		// with a later node write could otherwise lack a task write before
		// it, and a gateway acknowledging it would let a task be stopped
		// while still routed (ADR 0023). A task write that leaves the
		// routing state as it is still moves the revision on (a
		// revision-only message), so that acknowledgements pass the revision
		// of any task write, such as a task's desired shutdown.
		rev := revs[1]
		forward(ctx, changes, s.st.Services.Watch(ctx, revs[0]), func(ev store.Event[api.Service]) bool { return mirror(m.services, ev) })
		forward(ctx, changes, s.st.Tasks.Watch(ctx, revs[1]), func(ev store.Event[api.Task]) bool {
			if ev.Type == store.Put && !ev.Object.Status.State.Terminal() {
				m.tasks[ev.Key] = ev.Object
			} else {
				delete(m.tasks, ev.Key)
			}
			rev = max(rev, ev.Revision)
			return true
		})
		forward(ctx, changes, s.st.Nodes.Watch(ctx, revs[2]), func(ev store.Event[api.Node]) bool { return mirror(m.nodes, ev) })
		var last []byte
		var sentRev int64
		return func() any {
			msg := m.endpoints(0)
			b, _ := json.Marshal(msg.Services)
			if last != nil && string(b) == string(last) {
				if rev <= sentRev {
					return nil // nothing the mesh cares about changed
				}
				msg = api.Endpoints{Services: []api.ServiceEndpoints{}, Unchanged: true}
			}
			last = b
			sentRev = rev
			msg.Revision = rev
			return msg
		}, nil
	})
}
