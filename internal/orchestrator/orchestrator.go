package orchestrator

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/controller"
	"github.com/berth-project/berth/internal/ids"
	"github.com/berth-project/berth/internal/store"
)

// Config is what the orchestrator needs.
type Config struct {
	Store  *store.Store
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now     func() time.Time
	Options Options
}

// Orchestrator keeps every service's tasks matching its spec. Only the leader
// runs it.
type Orchestrator struct {
	cfg Config
	log *slog.Logger
	// seen is since when each task was first seen serving (ObserveServing);
	// only the loop's goroutine touches it.
	seen map[string]time.Time
}

// New returns an orchestrator.
func New(cfg Config) *Orchestrator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Options.NewID == nil {
		cfg.Options.NewID = ids.New
	}
	return &Orchestrator{cfg: cfg, log: cfg.Logger.WithGroup("orchestrator"), seen: map[string]time.Time{}}
}

// Run reconciles until ctx ends.
func (o *Orchestrator) Run(ctx context.Context) error {
	l := &controller.Loop{Name: "orchestrator", Store: o.cfg.Store, Logger: o.log, Reconcile: o.reconcile}
	return l.Run(ctx)
}

// batchSize bounds the creates in one transaction: small transactions keep
// heartbeats and status writes from waiting long behind a scale-up.
const batchSize = store.MaxBatch

func (o *Orchestrator) reconcile(ctx context.Context, st *controller.State) (time.Time, error) {
	ObserveServing(o.seen, st.Tasks)
	now := o.cfg.Now().UTC()
	res := Reconcile(now, State{Services: st.Services, Tasks: st.Tasks, Nodes: st.Nodes, ServingSince: o.seen}, o.cfg.Options)
	s := o.cfg.Store
	again := res.Wake
	soon := func(d time.Duration) {
		if t := o.cfg.Now().Add(d); again.IsZero() || t.Before(again) {
			again = t
		}
	}
	// Service changes land first, each in its own transaction (with the
	// version record of an automatic rollback). One that does not land (the
	// service changed meanwhile: a deploy, a promote) drops the task changes
	// of its service: they were decided on what is now stale, and the watch
	// brings the change back here.
	stale := map[string]bool{}
	for i := range res.Services {
		w := res.Services[i]
		txn := s.Txn()
		s.Services.TxnUpdate(txn, &w.Service)
		if w.Version != nil {
			s.Versions.TxnPut(txn, w.Version)
		}
		err := txn.Commit(ctx)
		switch {
		case err == nil:
			st.Services[w.Service.ID] = w.Service
			if u := w.Service.UpdateStatus; u != nil {
				o.log.Info("update status", "service", w.Service.Spec.Name, "version", w.Service.Version, "state", u.State,
					"updated", u.Updated, "failed", u.Failed, "total", u.Total, "rollback", u.Rollback, "message", u.Message)
			}
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
			stale[w.Service.ID] = true
			soon(time.Second)
		default:
			return time.Time{}, err
		}
	}
	if len(stale) > 0 {
		keep := func(ts []api.Task) []api.Task {
			out := ts[:0]
			for _, t := range ts {
				if !stale[t.ServiceID] {
					out = append(out, t)
				}
			}
			return out
		}
		res.Creates, res.Updates, res.Deletes = keep(res.Creates), keep(res.Updates), keep(res.Deletes)
	}
	// Creates go in batches bounded by count and bytes; a batch lands whole
	// or not at all. A failed batch does not keep the updates and deletes
	// below (other services' work) from happening.
	var createErr error
	for i := 0; i < len(res.Creates); {
		txn := s.Txn()
		j := i
		for j < len(res.Creates) && j-i < batchSize && (j == i || txn.Size() < store.MaxTxnBytes) {
			s.Tasks.TxnCreate(txn, &res.Creates[j])
			j++
		}
		if err := txn.Commit(ctx); err != nil {
			createErr = err
			o.log.Warn("creating tasks failed", "count", j-i, "service", res.Creates[i].ServiceName, "err", err)
		} else {
			for _, t := range res.Creates[i:j] {
				st.PutTask(t)
				if t.Move != nil {
					o.log.Info("rebalancing: moving a task off its node", "service", t.ServiceName, "slot", t.Slot, "from", t.Move.From, "task", t.ID)
				}
			}
		}
		i = j
	}
	if len(res.Creates) > 0 {
		o.log.Debug("tasks created", "count", len(res.Creates))
	}
	// Updates and deletes are guarded one by one (in small batches that
	// fall back to single writes): a conflict only means the task changed
	// meanwhile, and the watch brings the change back here.
	done, err := s.Tasks.UpdateMany(ctx, res.Updates)
	for i, ok := range done {
		if ok {
			st.PutTask(res.Updates[i])
		}
	}
	if err != nil {
		return time.Time{}, err
	}
	keys, revs := make([]string, len(res.Deletes)), make([]int64, len(res.Deletes))
	for i, t := range res.Deletes {
		keys[i], revs[i] = t.ID, t.Revision
	}
	done, err = s.Tasks.DeleteMany(ctx, keys, revs)
	for i, ok := range done {
		if ok {
			delete(st.Tasks, keys[i])
		}
	}
	if err != nil {
		return time.Time{}, err
	}
	if createErr != nil {
		// Try again soon, without holding up anything else meanwhile.
		soon(2 * time.Second)
	}
	return again, nil
}
