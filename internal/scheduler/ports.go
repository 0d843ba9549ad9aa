package scheduler

import "math/bits"

// portSet is the set of host ports held on one node, as a bitmap over the
// node's port range.
type portSet struct {
	lo   int // first port of the range
	size int // ports in the range; 0 if the node's range is invalid
	bits []uint64
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
		if s.snapPorts != nil {
			for _, p := range s.snapPorts[n] {
				if i := p - lo; i >= 0 && i < ps.size && ps.bits[i/64]&(1<<(i%64)) == 0 {
					ps.bits[i/64] |= 1 << (i % 64)
					free--
				}
			}
		}
	}
	st.ports, st.freePorts = ps, int32(free)
	return ps
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
