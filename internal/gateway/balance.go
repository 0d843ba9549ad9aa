package gateway

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"
)

// backendKey identifies a backend across configs: a task may serve several
// ports, each its own backend.
type backendKey struct{ id, addr string }

// backendState is a backend and its counters. One exists per backendKey for
// as long as the backend is in the config or has traffic in flight, so its
// counters survive config reloads.
type backendState struct {
	Backend

	// inflight counts requests (HTTP), connections (TCP) and sessions (UDP)
	// proxied to this backend and not yet finished.
	inflight atomic.Int64
	// draining is set by Gateway.Drain: no new traffic.
	draining atomic.Bool
	// ejectedUntil is when passive-health ejection ends, in Unix
	// nanoseconds; 0 when the backend was never ejected or has answered
	// since.
	ejectedUntil atomic.Int64
	// fails counts consecutive connection failures; the cool-off doubles
	// with each.
	fails atomic.Int32

	// kill ends when the backend's drain time is over (or the gateway
	// closes): everything still proxied to it is then cut off.
	kill       context.Context
	killCancel context.CancelFunc

	// pool holds idle keep-alive connections to the backend (HTTP).
	pool connPool

	// Guarded by Gateway.mu.
	live      bool        // in the config in force
	killTimer *time.Timer // runs from removal or Drain to kill
}

func newBackendState(parent context.Context, b Backend) *backendState {
	s := &backendState{Backend: b}
	s.kill, s.killCancel = context.WithCancel(parent)
	return s
}

// usable reports whether new traffic may go to the backend at now (Unix
// nanoseconds).
func (b *backendState) usable(now int64) bool {
	return !b.draining.Load() && b.ejectedUntil.Load() <= now
}

// eject keeps new traffic away from the backend for a cool-off that doubles
// with each consecutive failure, from min up to max. It reports whether the
// backend was not ejected already (so the caller logs once per ejection).
func (b *backendState) eject(now int64, min, max time.Duration) (time.Duration, bool) {
	for {
		until := b.ejectedUntil.Load()
		if until > now {
			return 0, false // a concurrent failure ejected it already
		}
		n := b.fails.Load()
		cool := min << min32(n, 20)
		if cool > max || cool <= 0 {
			cool = max
		}
		if b.ejectedUntil.CompareAndSwap(until, now+int64(cool)) {
			b.fails.Add(1)
			return cool, true
		}
	}
}

func min32(a int32, b int32) int32 {
	if a < b {
		return a
	}
	return b
}

// succeeded resets passive health after a connection worked. The loads keep
// the common path free of writes to shared cache lines.
func (b *backendState) succeeded() {
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
	if b.ejectedUntil.Load() != 0 {
		b.ejectedUntil.Store(0)
	}
}

// Selector is a load-balancing policy: it picks one of backends, which is
// never empty and holds only backends that may take new traffic. It must be
// safe for concurrent use.
type Selector interface {
	Select(backends []*backendState) *backendState
}

// RoundRobin picks backends in turn.
type RoundRobin struct {
	next atomic.Uint64
}

// Select returns the next backend in turn.
func (r *RoundRobin) Select(backends []*backendState) *backendState {
	n := r.next.Add(1)
	return backends[n%uint64(len(backends))]
}

// LeastOutstanding picks two different backends at random and returns the one
// with fewer requests in flight ("power of two choices"): nearly as good as
// the global minimum, without its herd behaviour or a scan.
type LeastOutstanding struct{}

// Select returns the less loaded of two random backends.
func (LeastOutstanding) Select(backends []*backendState) *backendState {
	n := len(backends)
	if n == 1 {
		return backends[0]
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := backends[i], backends[j]
	if b.inflight.Load() < a.inflight.Load() {
		return b
	}
	return a
}

func newSelector(policy string) (Selector, error) {
	switch policy {
	case "", PolicyRoundRobin:
		rr := &RoundRobin{}
		rr.next.Store(rand.Uint64()) // gateways on different nodes start apart
		return rr, nil
	case PolicyLeastOutstanding:
		return LeastOutstanding{}, nil
	}
	return nil, fmt.Errorf("policy %q is neither %q nor %q", policy, PolicyRoundRobin, PolicyLeastOutstanding)
}

// pool is the backends of one published port or route in one config.
type pool struct {
	service  string
	backends []*backendState
	sel      Selector
}

// pick selects a backend for new traffic, skipping those in exclude (already
// tried for this request), and counts it in flight. When every other backend
// is ejected it tries an ejected one rather than failing: a refused
// connection costs little, and the backend may be back. It returns nil when
// no backend is left.
func (p *pool) pick(now func() int64, exclude []*backendState) *backendState {
	if p == nil || len(p.backends) == 0 {
		return nil
	}
	// Fast path: nothing excluded, draining or ever ejected.
	fast := len(exclude) == 0
	if fast {
		for _, b := range p.backends {
			if b.draining.Load() || b.ejectedUntil.Load() != 0 {
				fast = false
				break
			}
		}
	}
	var b *backendState
	if fast {
		b = p.sel.Select(p.backends)
	} else {
		t := now()
		cands := make([]*backendState, 0, len(p.backends))
		var ejected []*backendState
		for _, b := range p.backends {
			if b.draining.Load() || slices.Contains(exclude, b) {
				continue
			}
			if b.usable(t) {
				cands = append(cands, b)
			} else {
				ejected = append(ejected, b)
			}
		}
		if len(cands) == 0 {
			cands = ejected
		}
		if len(cands) == 0 {
			return nil
		}
		b = p.sel.Select(cands)
	}
	b.inflight.Add(1)
	return b
}
