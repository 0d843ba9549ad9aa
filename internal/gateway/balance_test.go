package gateway

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

func states(n int) []*backendState {
	out := make([]*backendState, n)
	for i := range out {
		out[i] = newBackendState(context.Background(), Backend{ID: fmt.Sprintf("t%d", i), Addr: fmt.Sprintf("127.0.0.1:%d", 1000+i)})
	}
	return out
}

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	bs := states(3)
	sel, _ := newSelector(PolicyRoundRobin)
	p := &pool{backends: bs, sel: sel}
	count := map[string]int{}
	for i := 0; i < 300; i++ {
		b := p.pick(func() int64 { return 0 }, nil)
		count[b.ID]++
		b.inflight.Add(-1)
	}
	for _, b := range bs {
		if count[b.ID] != 100 {
			t.Errorf("%s got %d of 300, want 100: %v", b.ID, count[b.ID], count)
		}
	}
}

func TestLeastOutstandingAvoidsTheBusiest(t *testing.T) {
	bs := states(3)
	bs[1].inflight.Store(50)
	bs[2].inflight.Store(10)
	p := &pool{backends: bs, sel: LeastOutstanding{}}
	count := map[string]int{}
	for i := 0; i < 3000; i++ {
		b := p.pick(func() int64 { return 0 }, nil)
		count[b.ID]++
		b.inflight.Add(-1)
	}
	// Any pair holds a backend less busy than t1, so t1 is never chosen;
	// t0 wins every pair it is in (2 of 3 pairs).
	if count["t1"] != 0 {
		t.Errorf("the busiest backend got %d requests", count["t1"])
	}
	if count["t0"] < 1800 || count["t0"] > 2200 {
		t.Errorf("the idlest backend got %d of 3000, want about 2000", count["t0"])
	}
}

func TestLeastOutstandingConcurrent(t *testing.T) {
	// Under the race detector: counters and selection are safe to share.
	bs := states(4)
	p := &pool{backends: bs, sel: LeastOutstanding{}}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				b := p.pick(func() int64 { return 0 }, nil)
				b.inflight.Add(-1)
			}
		}()
	}
	wg.Wait()
	for _, b := range bs {
		if n := b.inflight.Load(); n != 0 {
			t.Errorf("%s in flight %d after all finished", b.ID, n)
		}
	}
}

func TestPickSkipsEjectedDrainingAndExcluded(t *testing.T) {
	clock := newFakeClock()
	now := func() int64 { return clock.Now().UnixNano() }
	bs := states(3)
	sel, _ := newSelector(PolicyRoundRobin)
	p := &pool{backends: bs, sel: sel}

	bs[0].eject(now(), time.Second, 30*time.Second)
	bs[1].draining.Store(true)
	for i := 0; i < 10; i++ {
		if b := p.pick(now, nil); b != bs[2] {
			t.Fatalf("picked %s, want t2 (t0 ejected, t1 draining)", b.ID)
		}
	}
	// All others excluded: the ejected backend is tried rather than none.
	if b := p.pick(now, []*backendState{bs[2]}); b != bs[0] {
		t.Fatalf("picked %v, want the ejected t0 as a last resort", b)
	}
	// Draining is never picked.
	if b := p.pick(now, []*backendState{bs[0], bs[2]}); b != nil {
		t.Fatalf("picked %s, want none", b.ID)
	}
	// After the cool-off t0 is back.
	clock.Advance(1100 * time.Millisecond)
	seen := map[string]bool{}
	for i := 0; i < 10; i++ {
		seen[p.pick(now, nil).ID] = true
	}
	if !seen["t0"] || !seen["t2"] || seen["t1"] {
		t.Fatalf("after cool-off picked %v, want t0 and t2", seen)
	}
}

func TestEjectCoolOffGrowsAndResets(t *testing.T) {
	b := states(1)[0]
	now := int64(0)
	var got []time.Duration
	for i := 0; i < 7; i++ {
		cool, first := b.eject(now, time.Second, 30*time.Second)
		if !first {
			t.Fatalf("eject %d: not counted as a new ejection", i)
		}
		got = append(got, cool)
		// A second failure during the cool-off does not extend it.
		if _, again := b.eject(now+1, time.Second, 30*time.Second); again {
			t.Fatalf("eject %d: counted twice", i)
		}
		now += int64(cool)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("cool-offs %v, want %v seconds", got, want)
		}
	}
	b.succeeded()
	if cool, _ := b.eject(now, time.Second, 30*time.Second); cool != time.Second {
		t.Fatalf("after a success the cool-off is %s, want 1s", cool)
	}
}

func TestNewSelectorRejectsUnknownPolicy(t *testing.T) {
	if _, err := newSelector("random"); err == nil {
		t.Fatal("policy random accepted")
	}
}
