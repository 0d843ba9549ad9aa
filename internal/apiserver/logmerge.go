package apiserver

import (
	"bufio"
	"container/heap"
	"io"
	"time"

	"github.com/berth-project/berth/internal/logstamp"
)

// logLine is one line of a task's log, its prefix (the task) already added.
type logLine struct {
	t    time.Time // zero when unknown
	text string    // prefix and text, without the time
	src  int       // which task: ties keep the tasks' order
	seq  uint64    // arrival order: ties within a task keep theirs
}

func (l logLine) before(m logLine) bool {
	if !l.t.Equal(m.t) {
		return l.t.Before(m.t)
	}
	if l.src != m.src {
		return l.src < m.src
	}
	return l.seq < m.seq
}

// render writes the line as the client sees it: "<time> <prefix><text>"
// with stamps, else "<prefix><text>". A line of unknown time (a note that the
// logs are unavailable) has no time printed.
func (l logLine) render(stamp bool) string {
	if stamp && !l.t.IsZero() {
		return l.t.UTC().Format(logstamp.Layout) + " " + l.text
	}
	return l.text
}

// lineSource reads one task's stamped lines ("<time> <text>", as the agent
// sends with timestamps=1). A line without a time (an agent of an older
// Berth) takes the time of the line before it: times never go back within a
// source, which the merge relies on.
type lineSource struct {
	sc     *bufio.Scanner
	prefix string
	src    int
	last   time.Time
	seq    uint64
	// first, when set, is served before anything is read (a note).
	first *logLine
	// body is what sc reads, for the caller to close.
	body io.Closer
}

func newLineSource(r io.Reader, prefix string, src int) *lineSource {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return &lineSource{sc: sc, prefix: prefix, src: src}
}

// noteSource is a source of one line of unknown time.
func noteSource(text string, src int) *lineSource {
	return &lineSource{first: &logLine{text: text, src: src}}
}

func (s *lineSource) next() (logLine, bool) {
	if s.first != nil {
		l := *s.first
		s.first = nil
		return l, true
	}
	if s.sc == nil || !s.sc.Scan() {
		return logLine{}, false
	}
	t, text, ok := logstamp.Split(s.sc.Bytes())
	if !ok || t.Before(s.last) {
		t = s.last
	}
	s.last = t
	s.seq++
	return logLine{t: t, text: s.prefix + string(text), src: s.src, seq: s.seq}, true
}

// mergeSources writes the lines of srcs, each already in time order, in
// time order: a k-way merge that holds one line per source, so memory does
// not grow with the logs.
func mergeSources(srcs []*lineSource, emit func(logLine)) {
	h := &lineHeap{}
	for i, s := range srcs {
		if l, ok := s.next(); ok {
			h.items = append(h.items, heapItem{l, i})
		}
	}
	heap.Init(h)
	for h.Len() > 0 {
		top := h.items[0]
		emit(top.line)
		if l, ok := srcs[top.from].next(); ok {
			h.items[0] = heapItem{l, top.from}
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
	}
}

type heapItem struct {
	line logLine
	from int
}

type lineHeap struct{ items []heapItem }

func (h *lineHeap) Len() int           { return len(h.items) }
func (h *lineHeap) Less(i, j int) bool { return h.items[i].line.before(h.items[j].line) }
func (h *lineHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *lineHeap) Push(x any)         { h.items = append(h.items, x.(heapItem)) }
func (h *lineHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}

type arrival struct {
	line logLine
	at   time.Time
}

// reorderLines puts followed lines, which arrive from many tasks as they come, in
// time order within a window: each line is held until window has passed
// since it arrived, and the held lines leave oldest time first. A line that
// arrives more than window after a later line of another task left is
// printed out of order; agents stamp within 100ms and poll every 150ms, so
// a window of half a second covers them.
// It returns when in is closed (emitting what it holds) or done closes.
func reorderLines(in <-chan logLine, done <-chan struct{}, window time.Duration, emit func(logLine)) {
	var held arrivalHeap
	tick := time.NewTicker(window / 5)
	defer tick.Stop()
	release := func(now time.Time, all bool) {
		for held.Len() > 0 {
			top := held.items[0]
			if !all && now.Sub(top.at) < window {
				return
			}
			heap.Pop(&held)
			emit(top.line)
		}
	}
	for {
		select {
		case <-done:
			return
		case l, ok := <-in:
			if !ok {
				release(time.Now(), true)
				return
			}
			heap.Push(&held, arrival{line: l, at: time.Now()})
		case now := <-tick.C:
			release(now, false)
		}
	}
}

type arrivalHeap struct{ items []arrival }

func (h *arrivalHeap) Len() int           { return len(h.items) }
func (h *arrivalHeap) Less(i, j int) bool { return h.items[i].line.before(h.items[j].line) }
func (h *arrivalHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *arrivalHeap) Push(x any)         { h.items = append(h.items, x.(arrival)) }
func (h *arrivalHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}
