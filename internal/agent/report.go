package agent

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
)

// reporter batches task status changes and sends them to the manager with
// the heartbeat. Updates that could not be sent are kept (the latest per task
// wins) and retried; a terminal state is never dropped.
type reporter struct {
	a *Agent

	debounce    time.Duration // how long to gather changes before sending
	callTimeout time.Duration // limit of one Report call
	maxBackoff  time.Duration

	mu      sync.Mutex
	pending map[string]api.TaskStatus
	kick    chan struct{}

	// sendMu lets one Report run at a time (the loop, or Shutdown's flush).
	sendMu  sync.Mutex
	limiter logLimiter
}

func newReporter(a *Agent) *reporter {
	return &reporter{
		a:           a,
		debounce:    10 * time.Millisecond,
		callTimeout: 10 * time.Second,
		maxBackoff:  5 * time.Second,
		pending:     map[string]api.TaskStatus{},
		kick:        make(chan struct{}, 1),
		limiter:     logLimiter{every: 30 * time.Second},
	}
}

// enqueue queues a task's new status for the next report.
func (p *reporter) enqueue(id string, st api.TaskStatus) {
	p.mu.Lock()
	if old, ok := p.pending[id]; ok && old.State.Terminal() && !st.State.Terminal() {
		// Cannot happen with a one-way lifecycle; guard the invariant
		// anyway: a terminal state is never replaced by a live one.
		p.mu.Unlock()
		return
	}
	p.pending[id] = st
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// drop forgets a pending live status of a task that left the node. A pending
// terminal state is kept.
func (p *reporter) drop(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st, ok := p.pending[id]; ok && !st.State.Terminal() {
		delete(p.pending, id)
	}
}

func (p *reporter) hasPending() bool {
	p.mu.Lock()
	n := len(p.pending)
	p.mu.Unlock()
	return n > 0 || p.a.gatewayAckDirty()
}

// kickNow asks for a report soon (the gateway's state changed).
func (p *reporter) kickNow() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// send makes one Report with everything pending (possibly nothing: a plain
// heartbeat). On failure the updates go back into the queue unless a newer
// status for the same task arrived meanwhile.
func (p *reporter) send(ctx context.Context) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.mu.Lock()
	batch := p.pending
	p.pending = map[string]api.TaskStatus{}
	p.mu.Unlock()

	rep := api.StatusReport{Tasks: make([]api.TaskStatusUpdate, 0, len(batch))}
	for id, st := range batch {
		rep.Tasks = append(rep.Tasks, api.TaskStatusUpdate{ID: id, Status: st})
	}
	sort.Slice(rep.Tasks, func(i, j int) bool { return rep.Tasks[i].ID < rep.Tasks[j].ID })
	rep.Gateway = p.a.gatewayAck()

	cctx, cancel := context.WithTimeout(ctx, p.callTimeout)
	err := p.a.m.Report(cctx, p.a.NodeID(), rep)
	cancel()
	if err != nil {
		if rep.Gateway != nil {
			p.a.markAckDirty()
		}
		p.mu.Lock()
		for id, st := range batch {
			if _, newer := p.pending[id]; !newer {
				p.pending[id] = st
			}
		}
		p.mu.Unlock()
		return err
	}
	p.a.reported(rep.Tasks)
	return nil
}

// run sends changes promptly and a heartbeat at least every
// HeartbeatInterval until ctx ends.
func (p *reporter) run(ctx context.Context) {
	bo := newBackoff(p.a.retryMin, p.maxBackoff)
	heartbeat := p.a.clock.After(p.a.cfg.HeartbeatInterval)
	var lastSent time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-heartbeat:
		case <-p.kick:
			// The first change after a quiet spell goes out at once; a
			// burst that follows a report settles into the next one.
			if wait := p.debounce - time.Since(lastSent); wait > 0 && !sleepCtx(ctx, wait) {
				return
			}
			if !p.hasPending() {
				continue // already sent with an earlier report
			}
		}
		for {
			err := p.send(ctx)
			if err == nil {
				lastSent = time.Now()
				bo.reset()
				p.limiter.ok()
				// Any report is a heartbeat: the next is due an interval
				// from now.
				heartbeat = p.a.clock.After(p.a.cfg.HeartbeatInterval)
				break
			}
			if ctx.Err() != nil {
				return
			}
			p.limiter.log(p.a.log, "status report failed; retrying", err)
			if !sleepCtx(ctx, bo.next()) {
				return
			}
		}
	}
}

// flushAll sends until nothing is pending or ctx ends.
func (p *reporter) flushAll(ctx context.Context) error {
	bo := newBackoff(p.a.retryMin, p.maxBackoff)
	for {
		err := p.send(ctx)
		if err == nil && !p.hasPending() {
			return nil
		}
		if err == nil {
			continue
		}
		if !sleepCtx(ctx, bo.next()) {
			return errors.Join(err, ctx.Err())
		}
	}
}
