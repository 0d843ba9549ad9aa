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
	// inflight is the batch of the Report under way.
	inflight map[string]api.TaskStatus
	// acked is, per task, the last status the manager accepted and when:
	// resync does not send it again while the assignment stream may still be
	// catching up with it.
	acked map[string]ackedStatus
	kick  chan struct{}

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
		acked:       map[string]ackedStatus{},
		kick:        make(chan struct{}, 1),
		limiter:     logLimiter{every: 30 * time.Second},
	}
}

// maxReportBatch is the most task updates one Report carries: the manager
// writes a batch in one transaction, and a node that re-reports a thousand
// tasks after a restart must not hold one huge write (or the heartbeat in
// the same call) behind it.
const maxReportBatch = 100

// resyncAfter is how long after the manager accepted a status the agent
// trusts that the assignment stream, not the manager, is behind when the
// two differ.
const resyncAfter = 5 * time.Second

// ackedStatus is a status the manager accepted.
type ackedStatus struct {
	state  api.TaskState
	health string
	at     time.Time
}

// resync queues a task's known status again when the manager's stored
// status (from the assignment stream) differs from it: an earlier report was
// lost — typically the agent restarted (or was killed) after the change but
// before the report, and the queue of unsent reports died with it. A status
// already queued or being sent, one the manager accepted moments ago (the
// stream may lag), and one behind what the manager has are left alone.
func (p *reporter) resync(id string, known, stored api.TaskStatus) {
	if known.State == stored.State && known.Health == stored.Health {
		return
	}
	if known.State.Before(stored.State) {
		return
	}
	p.mu.Lock()
	if _, ok := p.pending[id]; ok {
		p.mu.Unlock()
		return
	}
	if _, ok := p.inflight[id]; ok {
		p.mu.Unlock()
		return
	}
	if ak, ok := p.acked[id]; ok && ak.state == known.State && ak.health == known.Health && time.Since(ak.at) < resyncAfter {
		p.mu.Unlock()
		return
	}
	p.pending[id] = known
	p.mu.Unlock()
	p.kickNow()
}

// forget drops what the reporter remembers of a task that is over.
func (p *reporter) forget(id string) {
	p.mu.Lock()
	delete(p.acked, id)
	p.mu.Unlock()
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
	delete(p.acked, id)
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

// send makes one Report with up to maxReportBatch pending updates (possibly
// none: a plain heartbeat); terminal states go first, then by task id. On
// failure the updates go back into the queue unless a newer status for the
// same task arrived meanwhile.
func (p *reporter) send(ctx context.Context) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.mu.Lock()
	rep := api.StatusReport{Tasks: make([]api.TaskStatusUpdate, 0, min(len(p.pending), maxReportBatch))}
	for id, st := range p.pending {
		rep.Tasks = append(rep.Tasks, api.TaskStatusUpdate{ID: id, Status: st})
	}
	sort.Slice(rep.Tasks, func(i, j int) bool {
		ti, tj := rep.Tasks[i].Status.State.Terminal(), rep.Tasks[j].Status.State.Terminal()
		if ti != tj {
			return ti
		}
		return rep.Tasks[i].ID < rep.Tasks[j].ID
	})
	if len(rep.Tasks) > maxReportBatch {
		rep.Tasks = rep.Tasks[:maxReportBatch]
		sort.Slice(rep.Tasks, func(i, j int) bool { return rep.Tasks[i].ID < rep.Tasks[j].ID })
	}
	batch := make(map[string]api.TaskStatus, len(rep.Tasks))
	for _, u := range rep.Tasks {
		batch[u.ID] = u.Status
		delete(p.pending, u.ID)
	}
	p.inflight = batch
	p.mu.Unlock()
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
		p.inflight = nil
		p.mu.Unlock()
		return err
	}
	now := time.Now()
	p.mu.Lock()
	for id, st := range batch {
		p.acked[id] = ackedStatus{state: st.State, health: st.Health, at: now}
	}
	p.inflight = nil
	p.mu.Unlock()
	p.a.reported(rep.Tasks)
	return nil
}

// pendingTasks reports whether task updates wait to be sent.
func (p *reporter) pendingTasks() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending) > 0
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
				if p.pendingTasks() {
					p.kickNow() // more than one batch was waiting
				}
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
