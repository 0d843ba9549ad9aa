package agent

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
)

// drainPoll is how often an agent stopping a task asks whether every
// gateway let go of it, and how often a gateway's draining set is checked.
const drainPoll = 20 * time.Millisecond

// DrainWaiter is an optional extra of a Manager: whether every gateway of
// the cluster has stopped sending a task traffic (see api.DrainStatus).
type DrainWaiter interface {
	Drained(ctx context.Context, task string, revision int64) (api.DrainStatus, error)
}

// Drained implements DrainWaiter.
func (m APIManager) Drained(ctx context.Context, task string, revision int64) (api.DrainStatus, error) {
	return m.C.Drained(ctx, task, revision)
}

var _ DrainWaiter = APIManager{}

// gatewayAcks is what this node's gateway has applied of the endpoints
// stream, reported with the heartbeat (api.GatewayAck). A change of the
// routing state or of the draining set is reported at once; a revision-only
// message waits for the next heartbeat.
type gatewayAcks struct {
	mu       sync.Mutex
	revision int64
	draining []string
	// refused are the services the gateway could not take (a port it
	// cannot open), from the last routing state it applied.
	refused []api.GatewayRefusal
	dirty   bool
}

// setGatewayRefused records the services the gateway refused in the routing
// state it applied last; a change is reported at once.
func (a *Agent) setGatewayRefused(refused []api.GatewayRefusal) {
	g := &a.acks
	g.mu.Lock()
	changed := !slices.Equal(g.refused, refused)
	g.refused = refused
	if changed {
		g.dirty = true
	}
	g.mu.Unlock()
}

// ackEndpoints records the revision of an endpoints message the gateway
// (and DNS) applied; urgent sends it at once.
func (a *Agent) ackEndpoints(rev int64, urgent bool) {
	if a.gw.Load() == nil {
		return
	}
	g := &a.acks
	g.mu.Lock()
	if rev > g.revision {
		g.revision = rev
		if urgent {
			g.dirty = true
		}
	}
	kick := g.dirty
	g.mu.Unlock()
	if kick {
		a.rep.kickNow()
	}
}

// gatewayAck returns what to report about the gateway, or nil without one,
// and marks it reported. The draining set is read from the gateway now, not
// from watchDraining's last look: a report that acknowledges the removal of a
// task must also say if requests to it are still in flight here.
func (a *Agent) gatewayAck() *api.GatewayAck {
	g := &a.acks
	g.mu.Lock()
	defer g.mu.Unlock()
	gw := a.gw.Load()
	if gw == nil {
		g.dirty = false
		return nil
	}
	g.draining = gw.Draining()
	g.dirty = false
	return &api.GatewayAck{Revision: g.revision, Draining: slices.Clone(g.draining), Refused: slices.Clone(g.refused)}
}

// gatewayAckDirty reports whether the gateway's state changed since the
// last report (never once the gateway is closed: there is nothing left to
// say); markAckDirty asks for it to be sent again (a failed report).
func (a *Agent) gatewayAckDirty() bool {
	a.acks.mu.Lock()
	defer a.acks.mu.Unlock()
	return a.acks.dirty && a.gw.Load() != nil
}

func (a *Agent) markAckDirty() {
	a.acks.mu.Lock()
	a.acks.dirty = true
	a.acks.mu.Unlock()
}

// watchDraining reports the gateway's draining set whenever it changes, so
// that an agent elsewhere waiting to stop a task learns at once that this
// gateway's last request to it finished.
func (a *Agent) watchDraining(ctx context.Context) {
	gw := a.gw.Load()
	if gw == nil {
		return
	}
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := gw.Draining()
		g := &a.acks
		g.mu.Lock()
		changed := !slices.Equal(now, g.draining)
		if changed {
			g.draining = now
			g.dirty = true
		}
		g.mu.Unlock()
		if changed {
			a.rep.kickNow()
		}
	}
}

// waitRemoteDrain waits, until deadline, for every gateway of the cluster to
// acknowledge rev and have nothing in flight to task. Without a revision or
// a manager that can tell, it returns at once. A manager that cannot be
// asked (one failing over) is asked again with back-off until the deadline:
// giving up early would stop the task while other gateways may still route
// to it, and the deadline (the task's grace period) bounds the wait anyway.
func (a *Agent) waitRemoteDrain(task string, rev int64, deadline time.Time) {
	dw, ok := a.m.(DrainWaiter)
	if !ok || rev <= 0 {
		return
	}
	var last api.DrainStatus
	var lastErr error
	pause := drainPoll
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		st, err := dw.Drained(ctx, task, rev)
		cancel()
		switch {
		case err == nil && st.Drained:
			return
		case err == nil:
			last, lastErr, pause = st, nil, drainPoll
		default:
			lastErr, pause = err, min(2*pause, 500*time.Millisecond)
		}
		time.Sleep(min(pause, max(time.Until(deadline), 0)))
	}
	if lastErr != nil {
		a.log.Warn("could not ask the manager whether other gateways let go of the task within its grace period; stopping it anyway",
			"task", task, "err", lastErr)
		return
	}
	a.log.Warn("gateways of other nodes did not let go of the task within its grace period; stopping it anyway",
		"task", task, "waiting_for", last.Waiting)
}
