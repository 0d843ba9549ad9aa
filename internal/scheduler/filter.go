package scheduler

import (
	"slices"
	"strconv"
	"strings"

	"github.com/berth-project/berth/api"
)

// Why a node is statically ineligible for a task. Codes from codeConstraint
// on mean constraint number code-codeConstraint fails.
const (
	codeOK uint16 = iota
	codeDown
	codeNotReady
	codePaused
	codeDrained
	codeNotActive
	codeNoDriver
	codeConstraint
)

// filter is the static part of eligibility — status, availability, driver
// and constraints — which no placement changes. It is evaluated once per
// distinct (driver, constraints) and shared by every group that has them.
type filter struct {
	driver string
	// cons are evaluated with api.Constraint.Matches, the one definition
	// of what a constraint means (the orchestrator's rebalance uses it too).
	cons  []api.Constraint
	built bool
	// code[n] says why node n is ineligible (codeOK if it is eligible).
	code []uint16
	// eligible are the nodes with codeOK, in ID order.
	eligible []int32
}

func newFilter(driver string, cons []api.Constraint) *filter {
	return &filter{driver: driver, cons: cons}
}

// check returns the first reason n is statically ineligible, or codeOK.
func (f *filter) check(n *api.Node) uint16 {
	switch {
	case n.Status == api.NodeDown:
		return codeDown
	case n.Status != api.NodeReady:
		return codeNotReady
	case n.Availability == api.AvailabilityPause:
		return codePaused
	case n.Availability == api.AvailabilityDrain:
		return codeDrained
	case n.Availability != api.AvailabilityActive:
		return codeNotActive
	}
	hasDriver := false
	for _, d := range n.Drivers {
		if d == f.driver {
			hasDriver = true
			break
		}
	}
	if !hasDriver {
		return codeNoDriver
	}
	for i := range f.cons {
		if !f.cons[i].Matches(n) {
			return codeConstraint + uint16(i)
		}
	}
	return codeOK
}

// filter evaluates f on every node the first time it is needed.
func (s *scheduler) filter(f *filter) *filter {
	if f.built {
		return f
	}
	f.built = true
	f.code = make([]uint16, len(s.nodes))
	for i := range s.nodes {
		c := f.check(s.api[i])
		f.code[i] = c
		if c == codeOK {
			f.eligible = append(f.eligible, int32(i))
		}
	}
	return f
}

// staticReason phrases a static code for one node (single) or as the verb
// phrase after a count of nodes.
func staticReason(code uint16, n *api.Node, f *filter, single bool) string {
	is := func(what string) string {
		if single {
			return "is " + what
		}
		return what
	}
	switch code {
	case codeDown:
		return is("down")
	case codeNotReady:
		if single {
			return "is not ready (status " + strconv.Quote(n.Status) + ")"
		}
		return "not ready"
	case codePaused:
		return is("paused")
	case codeDrained:
		return is("drained")
	case codeNotActive:
		if single {
			return "is not active (availability " + strconv.Quote(n.Availability) + ")"
		}
		return "not active"
	case codeNoDriver:
		return "lacks driver " + f.driver
	}
	return "fails constraint " + f.cons[code-codeConstraint].String()
}

// explain says why no node can take the next task of g now: each node is
// counted under the first check it fails, in the order status, availability,
// driver, exclusive CPUs (topology, then free CPUs), cpu, memory,
// constraints, the per-node cap, host-mode ports (the first one taken),
// ports. When host-mode ports are all that keeps the task off every node,
// the text says so plainly. The text is cached until the next placement
// changes the answer.
func (s *scheduler) explain(g *group) string {
	d := g.demand
	if d.reasonSet && d.reasonStamp == s.placed {
		return d.reason
	}
	f := s.filter(d.filter)
	var (
		static                         [codeConstraint]int
		cons                           = make([]int, len(f.cons))
		cpu, mem, ports, fit           int
		cpuFree, memFree, portsFree    int64
		cpuFreeSet, memFreeSet, portOK bool
		noTopo, excl, exclFree         int
		maxed                          int
		hostTaken                      = make([]int, len(d.host))
		anyHost                        bool
	)
	for i := range s.nodes {
		st := &s.nodes[i]
		code := f.code[i]
		switch {
		case code != codeOK && code < codeConstraint:
			static[code]++
		case d.excl > 0 && s.lacksExclusive(d, int32(i)):
			if s.topoOf(int32(i)).m == nil {
				noTopo++
			} else {
				excl++
				exclFree = max(exclFree, s.freeExclusive(int32(i), d))
			}
		case st.lacksCPU(d.cpu):
			cpu++
			if free := st.cpuCap - st.cpu; !cpuFreeSet || free > cpuFree {
				cpuFree, cpuFreeSet = free, true
			}
		case st.lacksMem(d.mem):
			mem++
			if free := st.memCap - st.mem; !memFreeSet || free > memFree {
				memFree, memFreeSet = free, true
			}
		case code >= codeConstraint:
			cons[code-codeConstraint]++
		case s.atMax(g, int32(i)):
			maxed++
		default:
			ok, inRange, taken := s.hostFit(d, int32(i))
			free := int64(s.freePorts(int32(i)) - inRange)
			switch {
			case !ok:
				hostTaken[slices.Index(d.host, taken)]++
				anyHost = true
			case d.nports > 0 && free < int64(d.nports):
				ports++
				if free = max(free, 0); !portOK || free > portsFree {
					portsFree, portOK = free, true
				}
			default:
				fit++ // unreachable while the heaps are right
			}
		}
	}
	var parts []string
	add := func(count int, verb1, verbN, what string) {
		if count == 0 {
			return
		}
		verb := verbN
		if count == 1 {
			verb = verb1
		}
		if verb != "" {
			verb += " "
		}
		parts = append(parts, strconv.Itoa(count)+" "+verb+what)
	}
	add(static[codeDown], "", "", "down")
	add(static[codeNotReady], "", "", "not ready")
	add(static[codePaused], "", "", "paused")
	add(static[codeDrained], "", "", "drained")
	add(static[codeNotActive], "", "", "not active")
	add(static[codeNoDriver], "lacks", "lack", "driver "+f.driver)
	add(noTopo, "has", "have", "no usable CPU topology")
	add(excl, "lacks", "lack", exclusiveWhat(d)+" (want "+strconv.Itoa(d.excl)+", most free "+strconv.Itoa(exclFree)+")")
	add(cpu, "lacks", "lack", "cpu (need "+formatCPU(d.cpu)+", most free "+formatCPU(max(cpuFree, 0))+")")
	add(mem, "lacks", "lack", "memory (need "+api.ByteSize(d.mem).String()+", most free "+api.ByteSize(max(memFree, 0)).String()+")")
	for i, c := range cons {
		add(c, "fails", "fail", "constraint "+f.cons[i].String())
	}
	add(maxed, "", "", "at max_replicas_per_node "+strconv.Itoa(int(d.maxPer)))
	hostParts := len(parts)
	for i, c := range hostTaken {
		add(c, "has", "have", "host port "+d.host[i].String()+" taken")
	}
	hostParts = len(parts) - hostParts
	add(ports, "lacks", "lack", "free ports (need "+strconv.Itoa(d.nports)+", most free "+strconv.FormatInt(portsFree, 10)+")")
	add(fit, "fits", "fit", "but was not chosen")
	noun := " nodes: "
	if len(s.nodes) == 1 {
		noun = " node: "
	}
	switch {
	case anyHost && hostParts == len(parts) && hostParts == 1:
		// Every node is eligible but for this one port: say that first.
		var taken hostPort
		for i, c := range hostTaken {
			if c > 0 {
				taken = d.host[i]
			}
		}
		d.reason = "host port " + taken.String() + " is taken on every eligible node (" + strconv.Itoa(len(s.nodes)) + strings.TrimSuffix(noun, ": ") + ")"
	case anyHost && hostParts == len(parts):
		d.reason = "host ports are taken on every eligible node (" + strconv.Itoa(len(s.nodes)) + noun + strings.Join(parts, ", ") + ")"
	default:
		d.reason = "no suitable node (" + strconv.Itoa(len(s.nodes)) + noun + strings.Join(parts, ", ") + ")"
	}
	d.reasonStamp, d.reasonSet = s.placed, true
	return d.reason
}
