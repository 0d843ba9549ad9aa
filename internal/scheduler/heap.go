package scheduler

// entry is a candidate node in a heap, keyed by the spread order: fewest
// tasks of the service, fewest tasks, lowest reserved CPU fraction, lowest
// node ID (node indexes are in ID order). ver is the node's version when the
// entry was keyed; a placement on the node makes the entry stale.
type entry struct {
	svc   int32
	total int32
	node  int32
	ver   uint32
	frac  float64
}

func (a *entry) less(b *entry) bool {
	if a.svc != b.svc {
		return a.svc < b.svc
	}
	if a.total != b.total {
		return a.total < b.total
	}
	if a.frac != b.frac {
		return a.frac < b.frac
	}
	return a.node < b.node
}

// A binary min-heap on []entry. container/heap would box every entry
// in an interface and call through one for each comparison.

func heapify(h []entry) {
	for i := len(h)/2 - 1; i >= 0; i-- {
		down(h, i)
	}
}

func down(h []entry, i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h[r].less(&h[l]) {
			m = r
		}
		if !h[m].less(&h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

func pop(h *[]entry) {
	old := *h
	last := len(old) - 1
	old[0] = old[last]
	*h = old[:last]
	down(*h, 0)
}

// upMax and downMax keep h a max-heap: a scan keeps its worst candidate on
// top, to evict it when it finds a better node.

func upMax(h []entry, i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h[p].less(&h[i]) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func downMax(h []entry, i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h[l].less(&h[r]) {
			m = r
		}
		if !h[i].less(&h[m]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
