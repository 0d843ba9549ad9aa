package orchestrator

import (
	"context"
	"errors"
	"log/slog"
	"time"

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
	return &Orchestrator{cfg: cfg, log: cfg.Logger.WithGroup("orchestrator")}
}

// Run reconciles until ctx ends.
func (o *Orchestrator) Run(ctx context.Context) error {
	l := &controller.Loop{Name: "orchestrator", Store: o.cfg.Store, Logger: o.log, Reconcile: o.reconcile}
	return l.Run(ctx)
}

// batchSize bounds the writes in one transaction.
const batchSize = 128

func (o *Orchestrator) reconcile(ctx context.Context, st *controller.State) (time.Time, error) {
	res := Reconcile(o.cfg.Now().UTC(), State{Services: st.Services, Tasks: st.Tasks, Nodes: st.Nodes}, o.cfg.Options)
	s := o.cfg.Store
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
			}
		}
		i = j
	}
	if len(res.Creates) > 0 {
		o.log.Debug("tasks created", "count", len(res.Creates))
	}
	// Updates and deletes are guarded one by one: a conflict only means the
	// task changed meanwhile, and the watch brings the change back here.
	for i := range res.Updates {
		t := res.Updates[i]
		err := s.Tasks.Update(ctx, &t)
		switch {
		case err == nil:
			st.PutTask(t)
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
		default:
			return time.Time{}, err
		}
	}
	for _, t := range res.Deletes {
		err := s.Tasks.Delete(ctx, t.ID, t.Revision)
		switch {
		case err == nil:
			delete(st.Tasks, t.ID)
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
		default:
			return time.Time{}, err
		}
	}
	if createErr != nil {
		// Try again soon, without holding up anything else meanwhile.
		return o.cfg.Now().Add(2 * time.Second), nil
	}
	return time.Time{}, nil
}
