package scheduler

import (
	"math/bits"
	"strconv"
	"strings"

	"github.com/berth-project/berth/api"
)

// What holds a port number on a node: a host-mode port of one protocol, or a
// port the scheduler allocated from the node's range (protoAny), which holds
// the number for every protocol.
const (
	protoTCP uint8 = 1 << iota
	protoUDP
	protoAny
)

// hostPort is a host-mode port a task needs on its node: exactly this
// number, for this protocol.
type hostPort struct {
	port  int32
	proto uint8 // protoTCP or protoUDP
}

func (h hostPort) String() string {
	p := "tcp/"
	if h.proto == protoUDP {
		p = "udp/"
	}
	return p + strconv.Itoa(int(h.port))
}

// heldPort is a port number held by a snapshot task, and by what.
type heldPort struct {
	port int32
	kind uint8 // protoTCP or protoUDP for a host-mode port, else protoAny
}

// isHostPort reports whether p is a host-mode port the scheduler must give
// exactly its published number. A host-mode port with a number no socket can
// have (validation rejects it) is treated as an ordinary port.
func isHostPort(p *api.PortSpec) bool {
	return p.Mode == api.PublishHost && p.Publish >= 1 && p.Publish <= 65535
}

func protoBit(proto string) uint8 {
	if proto == "udp" {
		return protoUDP
	}
	return protoTCP
}

// hostPorts returns t's host-mode ports in spec order, or nil.
func hostPorts(t *api.Task) []hostPort {
	var out []hostPort
	for i := range t.Spec.Ports {
		if p := &t.Spec.Ports[i]; isHostPort(p) {
			out = append(out, hostPort{port: int32(p.Publish), proto: protoBit(p.Protocol)})
		}
	}
	return out
}

// writeHostPortsKey separates demands by their host-mode ports.
func writeHostPortsKey(b *strings.Builder, t *api.Task) {
	for i := range t.Spec.Ports {
		if p := &t.Spec.Ports[i]; isHostPort(p) {
			b.WriteByte(3)
			b.WriteByte('0' + protoBit(p.Protocol))
			b.WriteString(strconv.Itoa(p.Publish))
		}
	}
}

// samePorts reports whether two tasks' ports make the same demand: it
// compares what writeDemandKey writes of them, or more.
func samePorts(a, b []api.PortSpec) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Mode != b[i].Mode || a[i].Publish != b[i].Publish || a[i].Protocol != b[i].Protocol {
			return false
		}
	}
	return true
}

// heldPorts appends the port numbers snapshot task t holds to out.
func heldPorts(out []heldPort, t *api.Task) []heldPort {
	hasHost := false
	for i := range t.Spec.Ports {
		if isHostPort(&t.Spec.Ports[i]) {
			hasHost = true
			break
		}
	}
	for name, p := range t.Ports {
		kind := protoAny
		if hasHost {
			for i := range t.Spec.Ports {
				if sp := &t.Spec.Ports[i]; sp.Name == name && isHostPort(sp) && sp.Publish == p {
					kind = protoBit(sp.Protocol)
					break
				}
			}
		}
		if p >= 1 && p <= 65535 {
			out = append(out, heldPort{port: int32(p), kind: kind})
		}
	}
	return out
}

// portSet is the set of host ports held on one node: a bitmap over the
// node's port range of the numbers the scheduler may not allocate, plus the
// holders of numbers that matter to host-mode ports.
type portSet struct {
	lo   int // first port of the range
	size int // ports in the range; 0 if the node's range is invalid
	bits []uint64
	// fixed maps a number held by a host-mode port, or held outside the
	// range, to what holds it (protoTCP, protoUDP, protoAny). A number in
	// the range whose bit is set but that is not here is held by an
	// allocated port: protoAny.
	fixed map[int32]uint8
}

// inRange returns p's index in the range, or -1.
func (ps *portSet) inRange(p int32) int {
	if i := int(p) - ps.lo; i >= 0 && i < ps.size {
		return i
	}
	return -1
}

func (ps *portSet) bit(i int) bool { return ps.bits[i/64]&(1<<(i%64)) != 0 }

// holders returns what holds number p (0 if it is free).
func (ps *portSet) holders(p int32) uint8 {
	if m, ok := ps.fixed[p]; ok {
		return m
	}
	if i := ps.inRange(p); i >= 0 && ps.bit(i) {
		return protoAny
	}
	return 0
}

// hold records that kind holds number p, and reports whether that took a
// number of the range that was free.
func (ps *portSet) hold(p int32, kind uint8) bool {
	i := ps.inRange(p)
	if i < 0 {
		if ps.fixed == nil {
			ps.fixed = map[int32]uint8{}
		}
		ps.fixed[p] |= kind
		return false
	}
	m := ps.holders(p)
	if m == 0 {
		ps.bits[i/64] |= 1 << (i % 64)
	}
	if kind != protoAny || m&^protoAny != 0 {
		// A host-mode holder joins, or an allocated port joins host-mode
		// holders: keep the exact set. (An allocated port alone needs only
		// its bit.)
		if ps.fixed == nil {
			ps.fixed = map[int32]uint8{}
		}
		ps.fixed[p] = m | kind
	}
	return m == 0
}

// hostFree reports whether h can be bound: nothing holds its number for its
// protocol or for every protocol.
func (ps *portSet) hostFree(h hostPort) bool {
	return ps.holders(h.port)&(h.proto|protoAny) == 0
}

// portSet returns node n's port set, building it on first use from the
// ports its snapshot tasks hold, and setting the node's freePorts.
func (s *scheduler) portSet(n int32) *portSet {
	st := &s.nodes[n]
	if st.ports != nil {
		return st.ports
	}
	ps := &portSet{}
	free := 0
	if lo, hi, ok := portRange(s.api[n].PortRange); ok {
		ps.lo, ps.size = lo, hi-lo+1
		ps.bits = make([]uint64, (ps.size+63)/64)
		free = ps.size
	}
	if s.snapPorts != nil {
		for _, h := range s.snapPorts[n] {
			if ps.hold(h.port, h.kind) {
				free--
			}
		}
	}
	st.ports, st.freePorts = ps, int32(free)
	return ps
}

// hostFit reports whether node n can give a task of demand d its host-mode
// ports, and how many free numbers of the range they would take (which
// allocated ports can then no longer have). The first host port that is
// taken is returned for the reason.
func (s *scheduler) hostFit(d *demand, n int32) (ok bool, inRange int, taken hostPort) {
	if len(d.host) == 0 {
		return true, 0, hostPort{}
	}
	ps := s.portSet(n)
	for k, h := range d.host {
		if !ps.hostFree(h) {
			return false, 0, h
		}
		if ps.holders(h.port) == 0 && ps.inRange(h.port) >= 0 && !seenPort(d.host[:k], h.port) {
			inRange++
		}
	}
	return true, inRange, hostPort{}
}

// seenPort reports whether number p is among hs.
func seenPort(hs []hostPort, p int32) bool {
	for _, h := range hs {
		if h.port == p {
			return true
		}
	}
	return false
}

// portRange returns the node's usable port range, or ok false if the
// configured range is invalid.
func portRange(r [2]int) (lo, hi int, ok bool) {
	if r == [2]int{} {
		r = [2]int{DefaultPortMin, DefaultPortMax}
	}
	lo, hi = r[0], r[1]
	if lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, false
	}
	return lo, hi, true
}

// freePorts returns how many host ports node n has free.
func (s *scheduler) freePorts(n int32) int {
	if f := s.nodes[n].freePorts; f >= 0 {
		return int(f)
	}
	s.portSet(n)
	return int(s.nodes[n].freePorts)
}

// take marks the first free port at or after index i (wrapping around) as
// held and returns its index. The set must have a free port; the caller
// keeps count.
func (ps *portSet) take(i int) int {
	i %= ps.size
	w := i / 64
	word := ^ps.bits[w] &^ (1<<(i%64) - 1) // free bits at or after i
	for k := 0; ; k++ {
		if word != 0 {
			j := w*64 + bits.TrailingZeros64(word)
			if j < ps.size {
				ps.bits[w] |= 1 << (j % 64)
				return j
			}
			// Bits past the end of the range in the last word: wrap.
		}
		if k > len(ps.bits) {
			panic("scheduler: take on a full port set")
		}
		w++
		if w == len(ps.bits) {
			w = 0
		}
		word = ^ps.bits[w]
	}
}
