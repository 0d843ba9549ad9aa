// Package controller holds what every control loop shares: an in-memory
// mirror of services, tasks and nodes kept current from store watches, and
// the loop shape (full reconcile, then debounced reconciles on change, with
// back-off on errors). It has no opinion about what a reconcile does.
package controller

import (
	"context"
	"log/slog"
	"reflect"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
)

// State is the mirror: objects by id (services by id as well).
type State struct {
	Services map[string]api.Service
	Tasks    map[string]api.Task
	Nodes    map[string]api.Node
}

// PutTask records a task the controller itself just wrote.
func (s *State) PutTask(t api.Task) {
	if old, ok := s.Tasks[t.ID]; !ok || old.Revision <= t.Revision {
		s.Tasks[t.ID] = t
	}
}

// Reconciler is called with the current state after every burst of changes,
// and again at the time it returns (zero: only on change).
type Reconciler func(ctx context.Context, st *State) (again time.Time, err error)

// Loop runs a controller on st until ctx ends.
type Loop struct {
	Name     string
	Store    *store.Store
	Logger   *slog.Logger
	Debounce time.Duration
	// Reconcile does the work.
	Reconcile Reconciler
}

// Run lists, reconciles, then follows changes; after an error it starts over
// with back-off. It returns nil when ctx ends.
func (l *Loop) Run(ctx context.Context) error {
	if l.Debounce == 0 {
		l.Debounce = 20 * time.Millisecond
	}
	log := l.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := 100 * time.Millisecond
	var lastLogged time.Time
	for {
		start := time.Now()
		err := l.runOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			backoff = 100 * time.Millisecond // it ran well for a while
		}
		if time.Since(lastLogged) > 10*time.Second {
			log.Warn("controller restarting", "controller", l.Name, "err", err)
			lastLogged = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

func (l *Loop) runOnce(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := &State{Services: map[string]api.Service{}, Tasks: map[string]api.Task{}, Nodes: map[string]api.Node{}}
	svcs, srev, err := l.Store.Services.List(ctx)
	if err != nil {
		return err
	}
	tasks, trev, err := l.Store.Tasks.List(ctx)
	if err != nil {
		return err
	}
	nodes, nrev, err := l.Store.Nodes.List(ctx)
	if err != nil {
		return err
	}
	for _, s := range svcs {
		st.Services[s.ID] = s
	}
	for _, t := range tasks {
		st.Tasks[t.ID] = t
	}
	for _, n := range nodes {
		st.Nodes[n.ID] = n
	}
	sw := l.Store.Services.Watch(ctx, srev)
	tw := l.Store.Tasks.Watch(ctx, trev)
	nw := l.Store.Nodes.Watch(ctx, nrev)

	var timer *time.Timer
	var timerC <-chan time.Time
	schedule := func(at time.Time) {
		d := max(time.Until(at), 0)
		if timer == nil {
			timer = time.NewTimer(d)
			timerC = timer.C
			return
		}
		timer.Stop()
		timer.Reset(d)
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	reconcile := func() error {
		again, err := l.Reconcile(ctx, st)
		if err != nil {
			return err
		}
		if !again.IsZero() {
			schedule(again)
		}
		return nil
	}
	if err := reconcile(); err != nil {
		return err
	}
	// The first change after a quiet spell is handled at once; changes that
	// follow within Debounce of a reconcile are batched into the next one.
	d := Debouncer{Window: l.Debounce}
	d.Fired()
	mark := d.Changed
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-sw:
			if !ok || ev.Err != nil {
				return watchErr(ev.Err)
			}
			if ev.Type == store.Deleted {
				for id, s := range st.Services {
					if s.Spec.Name == ev.Key {
						delete(st.Services, id)
					}
				}
			} else {
				st.Services[ev.Object.ID] = ev.Object
			}
			mark()
		case ev, ok := <-tw:
			if !ok || ev.Err != nil {
				return watchErr(ev.Err)
			}
			if ev.Type == store.Deleted {
				delete(st.Tasks, ev.Key)
			} else if old, ok := st.Tasks[ev.Key]; !ok || old.Revision <= ev.Revision {
				st.Tasks[ev.Key] = ev.Object
			}
			mark()
		case ev, ok := <-nw:
			if !ok || ev.Err != nil {
				return watchErr(ev.Err)
			}
			if ev.Type == store.Deleted {
				delete(st.Nodes, ev.Key)
				mark()
				continue
			}
			old, had := st.Nodes[ev.Key]
			st.Nodes[ev.Key] = ev.Object
			// A heartbeat changes only the time: no reconcile for that.
			if !had || !sameButHeartbeat(old, ev.Object) {
				mark()
			}
		case <-d.C():
			if err := reconcile(); err != nil {
				return err
			}
			d.Fired()
		case <-timerC:
			if err := reconcile(); err != nil {
				return err
			}
		}
	}
}

func sameButHeartbeat(a, b api.Node) bool {
	a.LastHeartbeat, b.LastHeartbeat = time.Time{}, time.Time{}
	a.Revision, b.Revision = 0, 0
	return reflect.DeepEqual(a, b)
}

func watchErr(err error) error {
	if err == nil {
		return context.Canceled
	}
	return err
}
