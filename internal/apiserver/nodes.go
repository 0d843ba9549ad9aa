package apiserver

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/ids"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/topology"
)

// DefaultPortRange is the host port range tasks get ports from when an agent
// names none.
var DefaultPortRange = [2]int{20000, 32767}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) error {
	nodes, _, err := s.st.Nodes.List(r.Context())
	if err != nil {
		return err
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Hostname < nodes[j].Hostname })
	multi := api.MultiHost(nodes)
	for i := range nodes {
		nodes[i].AddressIssue = api.NodeAddressIssue(nodes[i], multi)
	}
	writeJSON(w, 200, nodes)
	return nil
}

// withAddressIssue sets n.AddressIssue, which depends on the other nodes.
func (s *Server) withAddressIssue(r *http.Request, n api.Node) (api.Node, error) {
	nodes, _, err := s.st.Nodes.List(r.Context())
	if err != nil {
		return n, err
	}
	n.AddressIssue = api.NodeAddressIssue(n, api.MultiHost(nodes))
	return n, nil
}

// findNode looks a node up by id, then by hostname.
func (s *Server) findNode(r *http.Request, ref string) (api.Node, error) {
	n, err := s.st.Nodes.Get(r.Context(), ref)
	if err == nil || !errors.Is(err, store.ErrNotFound) {
		return n, err
	}
	nodes, _, err := s.st.Nodes.List(r.Context())
	if err != nil {
		return n, err
	}
	var found []api.Node
	for _, n := range nodes {
		if n.Hostname == ref || (len(ref) >= 6 && strings.HasPrefix(n.ID, ref)) {
			found = append(found, n)
		}
	}
	switch len(found) {
	case 0:
		return n, notFound("no node with id or hostname %q", ref)
	case 1:
		return found[0], nil
	}
	return n, invalid("node", "%q matches %d nodes; use the node id", ref, len(found))
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request) error {
	n, err := s.findNode(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if n, err = s.withAddressIssue(r, n); err != nil {
		return err
	}
	writeJSON(w, 200, n)
	return nil
}

// nodeTopology draws a node's CPU topology as text: every unit, its CPUs,
// and which task (service.slot) holds each CPU; reserved CPUs are marked
// and the shared pool is named at the end. Tasks on the shared pool are
// not drawn as holders: they share every CPU of the pool.
func (s *Server) nodeTopology(w http.ResponseWriter, r *http.Request) error {
	n, err := s.findNode(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if n.Topology == nil {
		return notFound("node %s (%s) reported no CPU topology: its agent could not read it", n.Hostname, n.ID)
	}
	tasks, _, err := s.st.Tasks.List(r.Context())
	if err != nil {
		return err
	}
	holders, exclusive, shared := topologyHolders(n, tasks)
	reserved, _ := topology.Parse(n.ReservedCPUs) // checked at registration
	pool, err := topology.Shared(*n.Topology, reserved, exclusive)
	var b strings.Builder
	fmt.Fprintf(&b, "node %s (%s)\n", n.Hostname, n.ID)
	b.WriteString(topology.Render(*n.Topology, holders))
	if err == nil {
		fmt.Fprintf(&b, "shared pool: cpus %s, %d shared tasks\n", orNone(pool.String()), shared)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(200)
	_, _ = io.WriteString(w, b.String())
	return nil
}

// topologyHolders maps each CPU of node n to the tasks pinned to it (names
// service.slot, joined by "+" when several per-unit tasks share a unit)
// and the reserved CPUs to topology.HolderReserved. It also returns the
// CPUs held by exclusive tasks and how many live tasks run on the shared
// pool.
func topologyHolders(n api.Node, tasks []api.Task) (map[int]string, topology.CPUSet, int) {
	holders := map[int]string{}
	var exclusive topology.CPUSet
	shared := 0
	sort.Slice(tasks, func(i, j int) bool {
		if tasks[i].ServiceName != tasks[j].ServiceName {
			return tasks[i].ServiceName < tasks[j].ServiceName
		}
		return tasks[i].Slot < tasks[j].Slot
	})
	for _, t := range tasks {
		if t.NodeID != n.ID || t.Status.State == api.TaskPending || t.Status.State.Terminal() {
			continue
		}
		if t.Allocation == nil {
			shared++
			continue
		}
		cpus, err := topology.Parse(t.Allocation.CPUs)
		if err != nil {
			continue
		}
		if t.Spec.Resources.Exclusive() {
			exclusive = exclusive.Union(cpus)
		}
		name := t.ServiceName + "." + strconv.Itoa(t.Slot)
		for _, id := range cpus.List() {
			if h := holders[id]; h != "" {
				holders[id] = h + "+" + name
			} else {
				holders[id] = name
			}
		}
	}
	if reserved, err := topology.Parse(n.ReservedCPUs); err == nil {
		for _, id := range reserved.List() {
			if holders[id] == "" {
				holders[id] = topology.HolderReserved
			}
		}
	}
	return holders, exclusive, shared
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// validateHostname checks a hostname a node claims, at field.
func validateHostname(field, h string) error {
	if !api.ValidHostname(h) {
		return invalid(field, "%q is not a hostname: 1 to %d letters, digits, '.', '-' and '_', starting and ending with a letter or digit",
			clipString(h, 64), api.MaxHostnameLen)
	}
	return nil
}

// validateAddress checks the address a node claims, at field.
func validateAddress(field, a string) error {
	if len(a) > api.MaxHostnameLen || !api.ValidNodeAddress(a) {
		return invalid(field, "%q is not an IP address or host name (give no port)", clipString(a, 64))
	}
	return nil
}

func clipString(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// validateRegistration checks what a node claims about itself (ADR 0029):
// every claim must be well-formed and within the bounds of a real machine.
// maxRefusals bounds the refused services a gateway report keeps.
const maxRefusals = 100

// maxReservedPorts bounds the ports a node reports it listens on.
const maxReservedPorts = 32

func validateRegistration(reg *api.NodeRegistration) error {
	if err := validateHostname("hostname", reg.Hostname); err != nil {
		return err
	}
	if err := validateAddress("address", reg.Address); err != nil {
		return err
	}
	if reg.PortRange == [2]int{} {
		reg.PortRange = DefaultPortRange
	}
	if lo, hi := reg.PortRange[0], reg.PortRange[1]; lo < 1 || hi > 65535 || lo > hi {
		return invalid("port_range", "[%d, %d] is not a range of ports within 1-65535", lo, hi)
	}
	if c := reg.Resources.CPUs; c < 0 || c > api.MaxNodeCPUs {
		return invalid("resources.cpus", "%v CPUs is not a machine's: claim 0 to %d", c, api.MaxNodeCPUs)
	}
	if m := reg.Resources.Memory; m < 0 || m > api.MaxNodeMemory {
		return invalid("resources.memory", "%s is not a machine's memory: claim 0 to %s", m, api.MaxNodeMemory)
	}
	if len(reg.Drivers) == 0 {
		return invalid("drivers", "a node needs at least one driver")
	}
	if len(reg.Drivers) > api.MaxNodeDrivers {
		return invalid("drivers", "at most %d drivers", api.MaxNodeDrivers)
	}
	for i, d := range reg.Drivers {
		if !api.ValidDriverName(d) {
			return invalid(fmt.Sprintf("drivers[%d]", i), "%q is not a driver name", clipString(d, 64))
		}
		for _, e := range reg.Drivers[:i] {
			if e == d {
				return invalid(fmt.Sprintf("drivers[%d]", i), "driver %q is listed twice", d)
			}
		}
	}
	if err := validateLabelMap("labels", reg.Labels); err != nil {
		return err
	}
	if len(reg.ReservedPorts) > maxReservedPorts {
		return invalid("reserved_ports", "at most %d ports", maxReservedPorts)
	}
	for i, p := range reg.ReservedPorts {
		if p.Port < 1 || p.Port > 65535 || (p.Protocol != "tcp" && p.Protocol != "udp") || len(p.Use) > 200 {
			return invalid(fmt.Sprintf("reserved_ports[%d]", i), "want a port within 1-65535, protocol tcp or udp, and a use of at most 200 characters")
		}
	}
	if reg.Topology == nil {
		if reg.ReservedCPUs != "" {
			return invalid("reserved_cpus", "needs the node's topology to check it against")
		}
	} else {
		m, err := topology.NewMachine(*reg.Topology)
		if err != nil {
			return invalid("topology", "%s", err.Error())
		}
		online := m.Online().Len()
		if online > api.MaxNodeCPUs {
			return invalid("topology.online", "%d online CPUs is more than the %d a node may have", online, api.MaxNodeCPUs)
		}
		if reg.Resources.CPUs > float64(online) {
			return invalid("resources.cpus", "%v CPUs is more than the %d online CPUs of the node's topology", reg.Resources.CPUs, online)
		}
		var mem api.ByteSize
		for _, n := range reg.Topology.NUMANodes {
			if n.Memory < 0 || n.Memory > api.MaxNodeMemory {
				return invalid("topology.numa_nodes", "NUMA node %d claims %s of memory: claim 0 to %s", n.ID, n.Memory, api.MaxNodeMemory)
			}
			mem += n.Memory
		}
		if mem > api.MaxNodeMemory {
			return invalid("topology.numa_nodes", "the NUMA nodes claim %s of memory in all, more than %s", mem, api.MaxNodeMemory)
		}
		reserved, err := topology.Parse(reg.ReservedCPUs)
		if err == nil {
			err = m.CheckReserved(reserved)
		}
		if err != nil {
			return invalid("reserved_cpus", "%s", err.Error())
		}
	}
	if reg.AgentURL != "" {
		u, err := url.Parse(reg.AgentURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return invalid("agent_url", "%q is not an https:// URL", reg.AgentURL)
		}
		if b, err := hex.DecodeString(reg.AgentCertSHA256); err != nil || len(b) != 32 {
			return invalid("agent_cert_sha256", "want the hex SHA-256 of the agent's certificate")
		}
		if len(reg.AgentSecret) < 32 {
			return invalid("agent_secret", "must be at least 32 characters")
		}
	}
	return nil
}

func (s *Server) registerNode(w http.ResponseWriter, r *http.Request) error {
	return s.register(w, r, true)
}

// register records a registration. Only the admin (the local mode of `berth
// up` and of `berth agent` with the admin token's files) may create a node;
// a node certificate may only update its own, so that a node removed with
// `berth node rm` cannot come back by registering again: it must join anew.
func (s *Server) register(w http.ResponseWriter, r *http.Request, mayCreate bool) error {
	var reg api.NodeRegistration
	if err := readJSON(r, &reg); err != nil {
		return err
	}
	if err := validateRegistration(&reg); err != nil {
		return err
	}
	ctx := r.Context()
	for range claimRetries {
		now := s.now().UTC()
		var n api.Node
		var err error
		if reg.NodeID != "" {
			n, err = s.st.Nodes.Get(ctx, reg.NodeID)
		} else {
			err = store.ErrNotFound
		}
		create := errors.Is(err, store.ErrNotFound)
		if err != nil && !create {
			return err
		}
		if create && !mayCreate {
			return &api.Error{Code: api.CodeForbidden, Status: http.StatusForbidden,
				Message: "node " + reg.NodeID + " was removed from the cluster: its certificate no longer registers it; join again with a join token"}
		}
		if create {
			id := reg.NodeID
			if id == "" {
				id = ids.New()
			}
			n = api.Node{ID: id, CreatedAt: now, Availability: api.AvailabilityActive, Role: "worker"}
		}
		// A node that claims a hostname it does not hold yet (a new node,
		// or a renamed one) must find it free, and the write is guarded so
		// that two nodes racing for one name cannot both win.
		// Claims on this manager take turns (claimMu), so that concurrent
		// registrations do not fail each other's guard; the guard still
		// holds against other managers and heartbeats.
		var listedAt int64
		claiming := create || n.Hostname != reg.Hostname
		if claiming {
			s.claimMu.Lock()
			if listedAt, err = s.hostnameFree(ctx, reg.Hostname, n.ID, "hostname"); err != nil {
				s.claimMu.Unlock()
				return err
			}
		}
		if reg.Address == "" {
			// An agent that names no address (an older one, or one that
			// could not tell) is taken to be where its connection comes
			// from.
			reg.Address = remoteHost(r)
		}
		n.Hostname, n.Address, n.AgentLabels = reg.Hostname, reg.Address, reg.Labels
		n.Labels = nodeLabels(&n) // an admin's label changes survive
		n.Resources, n.Drivers, n.PortRange, n.AgentURL = reg.Resources, reg.Drivers, reg.PortRange, reg.AgentURL
		n.Topology, n.ReservedCPUs, n.ReservedPorts = reg.Topology, reg.ReservedCPUs, reg.ReservedPorts
		n.Status, n.LastHeartbeat = api.NodeReady, now
		rec := store.AgentRecord{NodeID: n.ID, URL: reg.AgentURL, CertSHA256: reg.AgentCertSHA256, Secret: reg.AgentSecret}
		txn := s.st.Txn()
		if listedAt != 0 {
			s.st.Nodes.TxnUnchangedSince(txn, listedAt)
		}
		if create {
			s.st.Nodes.TxnCreate(txn, &n)
		} else {
			s.st.Nodes.TxnUpdate(txn, &n)
		}
		s.st.Agents.TxnPut(txn, &rec)
		err = txn.Commit(ctx)
		if claiming {
			s.claimMu.Unlock()
		}
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		s.agents.forget(n.ID)
		s.log.Info("node registered", "node", n.ID, "hostname", n.Hostname, "new", create)
		writeJSON(w, 200, n)
		return nil
	}
	return &api.Error{Code: api.CodeConflict, Status: 409, Message: "node is being changed concurrently; try again"}
}

// claimRetries bounds the attempts of a write that claims a hostname: its
// guard fails on any node write meanwhile, heartbeats included.
const claimRetries = 4 * casRetries

// hostnameFree returns an error (409, at field) if a node other than self
// holds hostname: a hostname belongs to the first node that registers it
// until an admin removes that node (ADR 0029). It returns the revision the
// nodes were listed at, to guard the write that claims the name.
func (s *Server) hostnameFree(ctx context.Context, hostname, self, field string) (int64, error) {
	nodes, rev, err := s.st.Nodes.List(ctx)
	if err != nil {
		return 0, err
	}
	for _, o := range nodes {
		if o.ID != self && strings.EqualFold(o.Hostname, hostname) {
			return 0, &api.Error{Code: api.CodeConflict, Status: http.StatusConflict, Field: field,
				Message: fmt.Sprintf("hostname %q belongs to node %s (%s, %s): a hostname names one node; if that machine is gone, remove it first with `berth node rm %s`, or give this node another name with --hostname",
					hostname, o.ID, o.Status, orNone(o.Address), o.ID)}
		}
	}
	return rev, nil
}

// nodeTasks reports whether a task belongs in a node's assignment set: it is
// on the node, the scheduler has placed it (a global task names its node
// before it has ports), and it has not ended.
func nodeTasks(nodeID string, t *api.Task) bool {
	return t.NodeID == nodeID && t.Status.State != api.TaskPending && !t.Status.State.Terminal()
}

// assignments streams the node's full assignment set as NDJSON, again after
// every change, until the client goes away.
func (s *Server) assignments(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	nodeID := r.PathValue("id")
	if _, err := s.st.Nodes.Get(ctx, nodeID); errors.Is(err, store.ErrNotFound) {
		return notFound("no node with id %q: register first", nodeID)
	} else if err != nil {
		return err
	}
	return s.follow(w, r, func(ctx context.Context, changes chan<- change) (func() any, error) {
		all, rev, err := s.st.Tasks.List(ctx)
		if err != nil {
			return nil, err
		}
		set := map[string]api.Task{}
		for _, t := range all {
			if nodeTasks(nodeID, &t) {
				set[t.ID] = t
			}
		}
		forward(ctx, changes, s.st.Tasks.Watch(ctx, rev), func(ev store.Event[api.Task]) bool {
			rev = ev.Revision
			_, had := set[ev.Key]
			if ev.Type == store.Put && nodeTasks(nodeID, &ev.Object) {
				set[ev.Key] = ev.Object
			} else if had {
				delete(set, ev.Key)
			} else {
				return false
			}
			return true
		})
		return func() any {
			msg := api.Assignments{Revision: rev, Tasks: make([]api.Task, 0, len(set))}
			for _, t := range set {
				msg.Tasks = append(msg.Tasks, t)
			}
			sort.Slice(msg.Tasks, func(i, j int) bool { return msg.Tasks[i].ID < msg.Tasks[j].ID })
			return msg
		}, nil
	})
}

func (s *Server) nodeStatus(w http.ResponseWriter, r *http.Request) error {
	nodeID := r.PathValue("id")
	var rep api.StatusReport
	if err := readJSON(r, &rep); err != nil {
		return err
	}
	for i, u := range rep.Tasks {
		if u.ID == "" {
			return invalid(fmt.Sprintf("tasks[%d].id", i), "is required")
		}
		if !u.Status.State.Valid() {
			return invalid(fmt.Sprintf("tasks[%d].status.state", i), "unknown state %q", u.Status.State)
		}
	}
	if gw := rep.Gateway; gw != nil {
		if len(gw.Refused) > maxRefusals {
			gw.Refused = gw.Refused[:maxRefusals]
		}
		for i := range gw.Refused {
			gw.Refused[i].Error = clipString(gw.Refused[i].Error, 1024)
		}
	}
	if err := s.heartbeat(r, nodeID, rep.Gateway); err != nil {
		return err
	}
	if err := s.applyStatuses(r, nodeID, rep.Tasks); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// statusApplies sets t's status from u and reports whether it should be
// written. A task only moves forward: reports on a task the scheduler has
// not placed yet, on an ended task, that would move it back, that are older
// than what is stored (a retried report), or that come from a node the task
// is not on, are ignored.
func (s *Server) statusApplies(t *api.Task, nodeID string, u api.TaskStatusUpdate) bool {
	if t.NodeID != nodeID {
		s.log.Warn("status for a task of another node ignored", "task", t.ID, "from", nodeID, "owner", t.NodeID)
		return false
	}
	cur := t.Status.State
	if cur == api.TaskPending || cur.Terminal() || u.Status.State.Before(cur) ||
		(u.Status.State == cur && !u.Status.Timestamp.IsZero() && u.Status.Timestamp.Before(t.Status.Timestamp)) {
		return false
	}
	st := u.Status
	if st.Timestamp.IsZero() {
		st.Timestamp = s.now().UTC()
	}
	t.Status = st
	return true
}

func (s *Server) heartbeat(r *http.Request, nodeID string, gw *api.GatewayAck) error {
	for range casRetries {
		n, err := s.st.Nodes.Get(r.Context(), nodeID)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("no node with id %q: register first", nodeID)
		}
		if err != nil {
			return err
		}
		n.LastHeartbeat = s.now().UTC()
		n.Status = api.NodeReady
		n.Gateway = gw // nil: the node runs no gateway (any more)
		if err := s.st.Nodes.Update(r.Context(), &n); !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return nil
}

// applyStatus records an agent's observation of one task (see
// statusApplies), retrying on conflict.
func (s *Server) applyStatus(r *http.Request, nodeID string, u api.TaskStatusUpdate) error {
	for range casRetries {
		t, err := s.st.Tasks.Get(r.Context(), u.ID)
		if errors.Is(err, store.ErrNotFound) {
			return nil // removed meanwhile
		}
		if err != nil {
			return err
		}
		if !s.statusApplies(&t, nodeID, u) {
			return nil
		}
		err = s.st.Tasks.Update(r.Context(), &t)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return err
	}
	return &api.Error{Code: api.CodeConflict, Status: 409, Message: "task " + u.ID + " is being changed concurrently"}
}

// nodeLabels computes a node's effective labels from its agent's labels,
// the agent labels an admin removed, and the admin's labels, which win.
// Registration and node updates both go through it, so that what an admin
// set survives the agent registering again.
func nodeLabels(n *api.Node) map[string]string {
	out := map[string]string{}
	for k, v := range n.AgentLabels {
		out[k] = v
	}
	for _, k := range n.RemovedLabels {
		delete(out, k)
	}
	for k, v := range n.AdminLabels {
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// validateLabelMap checks label keys and values at the field path at.
func validateLabelMap(at string, labels map[string]string) error {
	if len(labels) > api.MaxLabels {
		return invalid(at, "at most %d labels", api.MaxLabels)
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !api.ValidLabelKey(k) {
			return invalid(at+"."+k, "invalid label key %q: use letters, digits, '.', '_', '/' and '-', starting and ending with a letter or digit", k)
		}
		if len(labels[k]) > 1024 {
			return invalid(at+"."+k, "value is longer than 1024 characters")
		}
	}
	return nil
}

// validateNodeUpdate checks a PATCH body; every error names its field.
func validateNodeUpdate(u *api.NodeUpdate) error {
	switch u.Availability {
	case "", api.AvailabilityActive, api.AvailabilityPause, api.AvailabilityDrain:
	default:
		return invalid("availability", "unknown availability %q: use active, pause or drain", u.Availability)
	}
	if err := validateLabelMap("labels_add", u.LabelsAdd); err != nil {
		return err
	}
	if len(u.LabelsRm) > api.MaxLabels {
		return invalid("labels_rm", "at most %d labels", api.MaxLabels)
	}
	for i, k := range u.LabelsRm {
		f := fmt.Sprintf("labels_rm[%d]", i)
		if !api.ValidLabelKey(k) {
			return invalid(f, "invalid label key %q", k)
		}
		if _, both := u.LabelsAdd[k]; both {
			return invalid(f, "label %q is both added and removed", k)
		}
	}
	if u.Availability == "" && len(u.LabelsAdd) == 0 && len(u.LabelsRm) == 0 {
		return invalid("", "nothing to change: set availability, labels_add or labels_rm")
	}
	return nil
}

// applyNodeUpdate changes n as u says. Removing a label the node does not
// have is no error.
func applyNodeUpdate(n *api.Node, u *api.NodeUpdate) {
	if u.Availability != "" {
		n.Availability = u.Availability
	}
	admin := map[string]string{}
	for k, v := range n.AdminLabels {
		admin[k] = v
	}
	removed := map[string]bool{}
	for _, k := range n.RemovedLabels {
		removed[k] = true
	}
	for k, v := range u.LabelsAdd {
		admin[k] = v
		delete(removed, k)
	}
	for _, k := range u.LabelsRm {
		delete(admin, k)
		if _, ok := n.AgentLabels[k]; ok {
			removed[k] = true
		}
	}
	n.AdminLabels, n.RemovedLabels = nil, nil
	if len(admin) > 0 {
		n.AdminLabels = admin
	}
	for k := range removed {
		n.RemovedLabels = append(n.RemovedLabels, k)
	}
	sort.Strings(n.RemovedLabels)
	n.Labels = nodeLabels(n)
}

// updateNode is PATCH /api/v1/nodes/{id}: availability and labels.
func (s *Server) updateNode(w http.ResponseWriter, r *http.Request) error {
	var u api.NodeUpdate
	if err := readJSON(r, &u); err != nil {
		return err
	}
	if err := validateNodeUpdate(&u); err != nil {
		return err
	}
	for range casRetries {
		n, err := s.findNode(r, r.PathValue("id"))
		if err != nil {
			return err
		}
		before := n.Availability
		applyNodeUpdate(&n, &u)
		if len(n.Labels) > api.MaxLabels {
			return invalid("labels_add", "the node would have %d labels; the limit is %d", len(n.Labels), api.MaxLabels)
		}
		err = s.st.Nodes.Update(r.Context(), &n)
		if errors.Is(err, store.ErrConflict) {
			continue // a heartbeat landed meanwhile
		}
		if err != nil {
			return err
		}
		s.log.Info("node updated", "node", n.ID, "hostname", n.Hostname, "availability", n.Availability,
			"was", before, "labels_add", len(u.LabelsAdd), "labels_rm", len(u.LabelsRm))
		writeJSON(w, 200, n)
		return nil
	}
	return &api.Error{Code: api.CodeConflict, Status: 409, Message: "node is being changed concurrently; try again"}
}

// removeNode is DELETE /api/v1/nodes/{id}[?force=true]. Only a down node may
// be removed without force. The node and its agent record go in one
// transaction; then its tasks that have not ended are marked lost, so that
// the orchestrator replaces them (should that be cut short, the node
// monitor marks tasks of a node that no longer exists lost as well).
func (s *Server) removeNode(w http.ResponseWriter, r *http.Request) error {
	force := false
	if v := r.URL.Query().Get("force"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return invalid("force", "%q is not true or false", v)
		}
		force = b
	}
	ctx := r.Context()
	for range casRetries {
		n, err := s.findNode(r, r.PathValue("id"))
		if err != nil {
			return err
		}
		if n.Status != api.NodeDown && !force {
			return &api.Error{Code: api.CodeConflict, Status: 409, Field: "force",
				Message: fmt.Sprintf("node %s (%s) is %s: stop its agent first (drain it to move its tasks gracefully), or force the removal with --force; its tasks are then replaced elsewhere", n.Hostname, n.ID, n.Status)}
		}
		txn := s.st.Txn()
		s.st.Nodes.TxnDelete(txn, n.ID, n.Revision)
		if rec, err := s.st.Agents.Get(ctx, n.ID); err == nil {
			s.st.Agents.TxnDelete(txn, n.ID, rec.Revision)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		err = txn.Commit(ctx)
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			continue // a heartbeat or registration landed meanwhile
		}
		if err != nil {
			return err
		}
		s.agents.forget(n.ID)
		s.knownNodes.Delete(n.ID) // its certificate stops working here at once
		s.log.Warn("node removed", "node", n.ID, "hostname", n.Hostname, "status", n.Status, "force", force)
		if err := s.loseTasksOf(r, n); err != nil {
			s.log.Warn("tasks of a removed node not marked lost; the node monitor will", "node", n.ID, "err", err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return &api.Error{Code: api.CodeConflict, Status: 409, Message: "node is being changed concurrently; try again"}
}

// loseTasksOf marks the live tasks of a removed node lost, one guarded
// write each.
func (s *Server) loseTasksOf(r *http.Request, n api.Node) error {
	for range casRetries {
		tasks, _, err := s.st.Tasks.List(r.Context())
		if err != nil {
			return err
		}
		conflict := false
		for _, t := range tasks {
			if t.NodeID != n.ID || t.Status.State.Terminal() {
				continue
			}
			now := s.now().UTC()
			t.Status = api.TaskStatus{State: api.TaskLost, Timestamp: now, FinishedAt: now,
				Err: fmt.Sprintf("node %s was removed", n.Hostname)}
			if err := s.st.Tasks.Update(r.Context(), &t); errors.Is(err, store.ErrConflict) {
				conflict = true
			} else if err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		if !conflict {
			return nil
		}
	}
	return &api.Error{Code: api.CodeConflict, Status: 409, Message: "the node's tasks are being changed concurrently; try again"}
}
