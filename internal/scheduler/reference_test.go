package scheduler

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/berth-project/berth/api"
)

// referenceSchedule is the placement rules written as plainly as possible:
// every task scans every node. It shares no code with Schedule except
// hashID and the default port range, and property tests require both to produce
// the same plan, reasons included.
func referenceSchedule(snap Snapshot, pending []api.Task) Plan {
	var plan Plan
	if len(pending) == 0 {
		return plan
	}
	// Nodes: first occurrence of each ID, in ID order.
	var nodes []*api.Node
	seen := map[string]bool{}
	for i := range snap.Nodes {
		if !seen[snap.Nodes[i].ID] {
			seen[snap.Nodes[i].ID] = true
			nodes = append(nodes, &snap.Nodes[i])
		}
	}
	slices.SortStableFunc(nodes, func(a, b *api.Node) int { return strings.Compare(a.ID, b.ID) })

	// Ports: a number allocated from a node's range (dyn) is taken for
	// both protocols; a host-mode port (host) only for its own.
	type hostKey struct {
		proto string
		port  int
	}
	type usage struct {
		tasks    int
		cpu, mem int64
		svc      map[string]int
		dyn      map[int]bool
		host     map[hostKey]bool
	}
	use := map[string]*usage{}
	for _, n := range nodes {
		use[n.ID] = &usage{svc: map[string]int{}, dyn: map[int]bool{}, host: map[hostKey]bool{}}
	}
	isHost := func(p api.PortSpec) bool { return p.Mode == "host" && p.Publish >= 1 && p.Publish <= 65535 }
	protoOf := func(p api.PortSpec) string {
		if p.Protocol == "udp" {
			return "udp"
		}
		return "tcp"
	}
	taken := func(u *usage, p int) bool { return u.dyn[p] || u.host[hostKey{"tcp", p}] || u.host[hostKey{"udp", p}] }
	pinnedIDs := map[string]bool{}
	for _, t := range pending {
		if t.NodeID != "" {
			pinnedIDs[t.ID] = true
		}
	}
	milli := func(c float64) int64 {
		if !(c > 0) {
			return 0
		}
		return int64(c*1000 + 0.5)
	}
	mem := func(t *api.Task) int64 { return max(int64(t.Spec.Resources.Memory), 0) }
	for i := range snap.Tasks {
		t := &snap.Tasks[i]
		u := use[t.NodeID]
		if t.NodeID == "" || t.Status.State.Terminal() || pinnedIDs[t.ID] || u == nil {
			continue
		}
		u.tasks++
		u.cpu += milli(t.Spec.Resources.CPUs)
		u.mem += mem(t)
		u.svc[t.ServiceID]++
		for name, p := range t.Ports {
			if p < 1 || p > 65535 {
				continue
			}
			kind := ""
			for _, sp := range t.Spec.Ports {
				if sp.Name == name && isHost(sp) && sp.Publish == p {
					kind = protoOf(sp)
				}
			}
			if kind == "" {
				u.dyn[p] = true
			} else {
				u.host[hostKey{kind, p}] = true
			}
		}
	}
	rng := func(n *api.Node) (int, int) {
		r := n.PortRange
		if r == [2]int{} {
			r = [2]int{DefaultPortMin, DefaultPortMax}
		}
		if r[0] < 1 || r[1] > 65535 || r[0] > r[1] {
			return 0, -1
		}
		return r[0], r[1]
	}
	freePorts := func(n *api.Node) int {
		lo, hi := rng(n)
		u := use[n.ID]
		held := map[int]bool{}
		for p := range u.dyn {
			held[p] = true
		}
		for k := range u.host {
			held[k.port] = true
		}
		free := hi - lo + 1
		for p := range held {
			if p >= lo && p <= hi {
				free--
			}
		}
		return free
	}

	order := make([]int, len(pending))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ta, tb := &pending[a], &pending[b]
		return cmp.Or(strings.Compare(ta.ServiceID, tb.ServiceID), cmp.Compare(ta.Slot, tb.Slot), strings.Compare(ta.ID, tb.ID))
	})

	for _, i := range order {
		t := &pending[i]
		unplaced := func(reason string) { plan.Unplaced = append(plan.Unplaced, Unplaced{t.ID, reason}) }
		var cons []api.Constraint
		var consErr error
		for _, s := range t.Placement.Constraints {
			c, err := api.ParseConstraint(s)
			if err != nil {
				consErr = err
				break
			}
			cons = append(cons, c)
		}
		if consErr != nil {
			unplaced("invalid placement constraint: " + consErr.Error())
			continue
		}
		if len(nodes) == 0 {
			unplaced("no nodes registered")
			continue
		}
		driver := t.Spec.Driver
		if driver == "" {
			driver = "process"
		}
		cpu, memNeed := milli(t.Spec.Resources.CPUs), mem(t)
		// The per-node cap and spread preferences apply to unpinned tasks.
		maxPer := 0
		var prefs []string
		if t.NodeID == "" {
			maxPer = max(t.Placement.MaxReplicasPerNode, 0)
			for _, p := range t.Placement.Preferences {
				k, err := api.ParseSpread(p.Spread)
				if err != nil {
					k = "\x00invalid"
				}
				prefs = append(prefs, k)
			}
		}
		holds := func(c api.Constraint, n *api.Node) bool {
			var v string
			ok := true
			switch {
			case c.Key == "node.id":
				v = n.ID
			case c.Key == "node.hostname":
				v = n.Hostname
			case c.Key == "node.role":
				v = n.Role
			default:
				v, ok = n.Labels[strings.TrimPrefix(c.Key, "node.labels.")]
			}
			return c.Equal == (ok && v == c.Value)
		}
		static := func(n *api.Node) bool {
			if n.Status != "ready" || n.Availability != "active" || !slices.Contains(n.Drivers, driver) {
				return false
			}
			for _, c := range cons {
				if !holds(c, n) {
					return false
				}
			}
			return true
		}
		var hostPorts []hostKey
		nports := 0
		for _, p := range t.Spec.Ports {
			if isHost(p) {
				hostPorts = append(hostPorts, hostKey{protoOf(p), p.Publish})
			} else {
				nports++
			}
		}
		hostName := func(h hostKey) string { return fmt.Sprintf("%s/%d", h.proto, h.port) }
		cpuCap := func(n *api.Node) int64 { return milli(n.Resources.CPUs) }
		memCap := func(n *api.Node) int64 { return max(int64(n.Resources.Memory), 0) }

		// why returns the reason n cannot take t: a category and, for the
		// explanation, how much is free.
		why := func(n *api.Node) (string, int64) {
			u := use[n.ID]
			switch {
			case n.Status == "down":
				return "down", 0
			case n.Status != "ready":
				return "not ready", 0
			case n.Availability == "pause":
				return "paused", 0
			case n.Availability == "drain":
				return "drained", 0
			case n.Availability != "active":
				return "not active", 0
			case !slices.Contains(n.Drivers, driver):
				return "driver", 0
			case cpu > 0 && cpuCap(n) > 0 && u.cpu+cpu > cpuCap(n):
				return "cpu", cpuCap(n) - u.cpu
			case memNeed > 0 && memCap(n) > 0 && u.mem+memNeed > memCap(n):
				return "memory", memCap(n) - u.mem
			}
			for k, c := range cons {
				if !holds(c, n) {
					return fmt.Sprintf("constraint %d", k), 0
				}
			}
			if maxPer > 0 && u.svc[t.ServiceID] >= maxPer {
				return "max", 0
			}
			for k, h := range hostPorts {
				if u.dyn[h.port] || u.host[h] {
					return fmt.Sprintf("host %d", k), 0
				}
			}
			// Host-mode ports in the range leave fewer numbers to allocate.
			lo, hi := rng(n)
			claimed := map[int]bool{}
			for _, h := range hostPorts {
				if h.port >= lo && h.port <= hi && !taken(u, h.port) {
					claimed[h.port] = true
				}
			}
			if free := freePorts(n) - len(claimed); nports > 0 && free < nports {
				return "ports", int64(max(free, 0))
			}
			return "", 0
		}
		cpuStr := func(m int64) string { return fmt.Sprint(float64(m) / 1000) }

		var chosen *api.Node
		if t.NodeID != "" {
			var n *api.Node
			for _, c := range nodes {
				if c.ID == t.NodeID {
					n = c
				}
			}
			if n == nil {
				unplaced("node " + t.NodeID + " is not registered")
				continue
			}
			cat, free := why(n)
			p := "node " + n.ID + " "
			switch {
			case cat == "":
				chosen = n
			case cat == "not ready":
				unplaced(p + fmt.Sprintf("is not ready (status %q)", n.Status))
			case cat == "not active":
				unplaced(p + fmt.Sprintf("is not active (availability %q)", n.Availability))
			case cat == "driver":
				unplaced(p + "lacks driver " + driver)
			case cat == "cpu":
				unplaced(p + fmt.Sprintf("lacks cpu (need %s, free %s)", cpuStr(cpu), cpuStr(max(free, 0))))
			case cat == "memory":
				unplaced(p + fmt.Sprintf("lacks memory (need %s, free %s)", api.ByteSize(memNeed), api.ByteSize(max(free, 0))))
			case cat == "ports":
				unplaced(p + fmt.Sprintf("lacks free ports (need %d, free %d)", nports, free))
			case strings.HasPrefix(cat, "host"):
				var k int
				fmt.Sscanf(cat, "host %d", &k)
				unplaced(p + "has host port " + hostName(hostPorts[k]) + " taken")
			case strings.HasPrefix(cat, "constraint"):
				var k int
				fmt.Sscanf(cat, "constraint %d", &k)
				unplaced(p + "fails constraint " + cons[k].String())
			default:
				unplaced(p + "is " + cat)
			}
			if chosen == nil {
				continue
			}
		} else {
			type key struct {
				svc, tasks int
				frac       float64
			}
			var best key
			count := map[string]int{}
			mostFree := map[string]int64{}
			// Spread preferences: the service's tasks per group of
			// statically eligible nodes, at each level.
			path := func(n *api.Node, level int) string {
				p := ""
				for l := 0; l <= level; l++ {
					if v, ok := n.Labels[prefs[l]]; ok {
						p += "=" + v + "|"
					} else {
						p += "-|"
					}
				}
				return p
			}
			groups := make([]map[string]int, len(prefs))
			for l := range prefs {
				groups[l] = map[string]int{}
				for _, n := range nodes {
					if static(n) {
						groups[l][path(n, l)] += use[n.ID].svc[t.ServiceID]
					}
				}
			}
			// cmpGroups orders a and b by their groups' task counts, level
			// by level; 0 when every level ties.
			cmpGroups := func(a, b *api.Node) int {
				for l := range prefs {
					if c := cmp.Compare(groups[l][path(a, l)], groups[l][path(b, l)]); c != 0 {
						return c
					}
				}
				return 0
			}
			for _, n := range nodes {
				cat, free := why(n)
				if cat != "" {
					if _, ok := mostFree[cat]; !ok || free > mostFree[cat] {
						mostFree[cat] = free
					}
					count[cat]++
					continue
				}
				u := use[n.ID]
				k := key{u.svc[t.ServiceID], u.tasks, 0}
				if c := cpuCap(n); c > 0 {
					k.frac = float64(u.cpu) / float64(c)
				}
				if chosen != nil {
					if c := cmpGroups(n, chosen); c > 0 {
						continue
					} else if c < 0 {
						chosen, best = n, k
						continue
					}
				}
				if chosen == nil || k.svc < best.svc ||
					k.svc == best.svc && (k.tasks < best.tasks || k.tasks == best.tasks && k.frac < best.frac) {
					chosen, best = n, k
				}
			}
			if chosen == nil {
				var parts []string
				add := func(cat, what string) {
					if c := count[cat]; c > 0 {
						parts = append(parts, fmt.Sprintf("%d %s", c, what))
					}
				}
				verb := func(cat, one, many string) string {
					if count[cat] == 1 {
						return one
					}
					return many
				}
				add("down", "down")
				add("not ready", "not ready")
				add("paused", "paused")
				add("drained", "drained")
				add("not active", "not active")
				add("driver", verb("driver", "lacks", "lack")+" driver "+driver)
				add("cpu", fmt.Sprintf("%s cpu (need %s, most free %s)", verb("cpu", "lacks", "lack"), cpuStr(cpu), cpuStr(max(mostFree["cpu"], 0))))
				add("memory", fmt.Sprintf("%s memory (need %s, most free %s)", verb("memory", "lacks", "lack"), api.ByteSize(memNeed), api.ByteSize(max(mostFree["memory"], 0))))
				for k, c := range cons {
					cat := fmt.Sprintf("constraint %d", k)
					add(cat, verb(cat, "fails", "fail")+" constraint "+c.String())
				}
				add("max", fmt.Sprintf("at max_replicas_per_node %d", maxPer))
				before := len(parts)
				hostCats := 0
				for k, h := range hostPorts {
					cat := fmt.Sprintf("host %d", k)
					add(cat, verb(cat, "has", "have")+" host port "+hostName(h)+" taken")
					hostCats += count[cat]
				}
				onlyHost := hostCats > 0 && before == 0
				add("ports", fmt.Sprintf("%s free ports (need %d, most free %d)", verb("ports", "lacks", "lack"), nports, mostFree["ports"]))
				onlyHost = onlyHost && count["ports"] == 0
				noun := "nodes"
				if len(nodes) == 1 {
					noun = "node"
				}
				switch {
				case onlyHost && len(parts) == 1:
					var h hostKey
					for k := range hostPorts {
						if count[fmt.Sprintf("host %d", k)] > 0 {
							h = hostPorts[k]
						}
					}
					unplaced(fmt.Sprintf("host port %s is taken on every eligible node (%d %s)", hostName(h), len(nodes), noun))
				case onlyHost:
					unplaced(fmt.Sprintf("host ports are taken on every eligible node (%d %s: %s)", len(nodes), noun, strings.Join(parts, ", ")))
				default:
					unplaced(fmt.Sprintf("no suitable node (%d %s: %s)", len(nodes), noun, strings.Join(parts, ", ")))
				}
				continue
			}
		}

		u := use[chosen.ID]
		u.tasks++
		u.cpu += cpu
		u.mem += memNeed
		u.svc[t.ServiceID]++
		a := Assignment{TaskID: t.ID, NodeID: chosen.ID}
		if len(t.Spec.Ports) > 0 {
			a.Ports = map[string]int{}
			for _, p := range t.Spec.Ports {
				if isHost(p) {
					a.Ports[p.Name] = p.Publish
					u.host[hostKey{protoOf(p), p.Publish}] = true
				}
			}
		}
		if nports > 0 {
			lo, hi := rng(chosen)
			size := hi - lo + 1
			pos := int(hashID(t.ID) % uint64(size))
			for _, p := range t.Spec.Ports {
				if isHost(p) {
					continue
				}
				for taken(u, lo+pos%size) {
					pos++
				}
				a.Ports[p.Name] = lo + pos%size
				u.dyn[lo+pos%size] = true
				pos = pos%size + 1
			}
		}
		plan.Assignments = append(plan.Assignments, a)
	}
	return plan
}
