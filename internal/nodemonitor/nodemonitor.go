// Package nodemonitor marks nodes that stopped sending heartbeats down and
// their tasks lost, so that the orchestrator replaces them elsewhere. Like
// every controller, only the leader runs it. It decides nothing about where
// replacements go.
package nodemonitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/controller"
	"github.com/berth-project/berth/internal/store"
)

// DefaultDownAfter is how long a node may go without a heartbeat before it
// is down: three missed beats of an agent's default one-second interval
// (agent.DefaultHeartbeatInterval), so one late report is no outage.
const DefaultDownAfter = 3 * time.Second

// Config is what the monitor needs.
type Config struct {
	Store  *store.Store
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// DownAfter is the heartbeat timeout; default DefaultDownAfter.
	DownAfter time.Duration
}

// Monitor is the node monitor.
type Monitor struct {
	cfg   Config
	log   *slog.Logger
	since time.Time
}

// New returns a Monitor.
func New(cfg Config) *Monitor {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DownAfter <= 0 {
		cfg.DownAfter = DefaultDownAfter
	}
	return &Monitor{cfg: cfg, log: cfg.Logger.WithGroup("nodemonitor")}
}

// Run watches nodes until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	// A new leader gives every node a full period to report to it: the
	// last heartbeats may predate an outage of the managers themselves.
	m.since = m.cfg.Now()
	l := &controller.Loop{Name: "nodemonitor", Store: m.cfg.Store, Logger: m.log, Reconcile: m.reconcile}
	return l.Run(ctx)
}

// Result is what Check decided.
type Result struct {
	Down []api.Node // nodes to mark down
	Lost []api.Task // tasks to mark lost
	// Wake is when to check again.
	Wake time.Time
}

// Check is the monitor's pure decision: which ready nodes have missed their
// heartbeats (counting from no earlier than since), and which tasks on down
// or removed nodes are not yet marked lost.
func Check(now, since time.Time, downAfter time.Duration, st *controller.State) Result {
	var res Result
	down := map[string]bool{}
	for id, n := range st.Nodes {
		last := n.LastHeartbeat
		if last.Before(since) {
			last = since
		}
		deadline := last.Add(downAfter)
		switch {
		case n.Status == api.NodeDown:
			down[id] = true
		case !now.Before(deadline):
			down[id] = true
			n.Status = api.NodeDown
			res.Down = append(res.Down, n)
		case res.Wake.IsZero() || deadline.Before(res.Wake):
			res.Wake = deadline
		}
	}
	for _, t := range st.Tasks {
		if t.NodeID == "" || t.Status.State.Terminal() || t.Status.State == api.TaskPending {
			continue
		}
		n, known := st.Nodes[t.NodeID]
		var why string
		switch {
		case !known:
			// The node was removed (berth node rm): nothing will ever
			// report on the task again.
			why = fmt.Sprintf("node %s was removed", t.NodeID)
		case down[t.NodeID]:
			why = fmt.Sprintf("node %s is down: no heartbeat since %s", n.Hostname, n.LastHeartbeat.Format(time.RFC3339))
		default:
			continue
		}
		t.Status = api.TaskStatus{State: api.TaskLost, Timestamp: now, FinishedAt: now, Err: why}
		res.Lost = append(res.Lost, t)
	}
	return res
}

func (m *Monitor) reconcile(ctx context.Context, st *controller.State) (time.Time, error) {
	now := m.cfg.Now()
	res := Check(now, m.since, m.cfg.DownAfter, st)
	for _, n := range res.Down {
		err := m.cfg.Store.Nodes.Update(ctx, &n)
		switch {
		case err == nil:
			st.Nodes[n.ID] = n
			m.log.Warn("node is down", "node", n.ID, "hostname", n.Hostname, "last_heartbeat", n.LastHeartbeat)
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
			// A heartbeat arrived meanwhile: the node lives.
		default:
			return time.Time{}, err
		}
	}
	done, err := m.cfg.Store.Tasks.UpdateMany(ctx, res.Lost)
	for i, ok := range done {
		if ok {
			st.PutTask(res.Lost[i])
		}
	}
	if err != nil {
		return time.Time{}, err
	}
	if len(res.Down) > 0 {
		// Lost tasks of nodes just marked down are found on the next pass.
		return now, nil
	}
	return res.Wake, nil
}
