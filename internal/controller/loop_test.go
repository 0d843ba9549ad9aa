package controller

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
)

// TestLoopMirrorsTheStoreAndWakes checks the loop's contract: a full
// reconcile first, another after changes (with the changes in the mirror),
// none for a heartbeat alone, and one at the time a reconcile asked for.
func TestLoopMirrorsTheStoreAndWakes(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := &api.Node{ID: "n1", Hostname: "a", Status: api.NodeReady}
	if err := st.Nodes.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []State
	wakeAt := time.Time{}
	calls := make(chan struct{}, 100)
	l := &Loop{Name: "test", Store: st, Reconcile: func(_ context.Context, s *State) (time.Time, error) {
		mu.Lock()
		defer mu.Unlock()
		cp := State{Services: map[string]api.Service{}, Tasks: map[string]api.Task{}, Nodes: map[string]api.Node{}}
		for k, v := range s.Services {
			cp.Services[k] = v
		}
		for k, v := range s.Tasks {
			cp.Tasks[k] = v
		}
		for k, v := range s.Nodes {
			cp.Nodes[k] = v
		}
		seen = append(seen, cp)
		w := wakeAt
		wakeAt = time.Time{}
		calls <- struct{}{}
		return w, nil
	}}
	go l.Run(ctx)
	wait := func(what string) State {
		t.Helper()
		select {
		case <-calls:
		case <-time.After(10 * time.Second):
			t.Fatalf("no reconcile: %s", what)
		}
		mu.Lock()
		defer mu.Unlock()
		return seen[len(seen)-1]
	}
	if s := wait("first"); len(s.Nodes) != 1 {
		t.Fatalf("first reconcile saw %d nodes", len(s.Nodes))
	}
	one := 1
	if err := st.Services.Create(ctx, &api.Service{ID: "s1", Spec: api.ServiceSpec{Name: "web", Replicas: &one}}); err != nil {
		t.Fatal(err)
	}
	if s := wait("after a service was created"); s.Services["s1"].Spec.Name != "web" {
		t.Fatalf("mirror lacks the new service: %+v", s.Services)
	}
	// A heartbeat alone does not wake the loop...
	n.LastHeartbeat = time.Now()
	if err := st.Nodes.Update(ctx, n); err != nil {
		t.Fatal(err)
	}
	select {
	case <-calls:
		t.Fatal("a heartbeat woke the loop")
	case <-time.After(300 * time.Millisecond):
	}
	// ...but the mirror has it, and a reconcile can ask to run again later.
	mu.Lock()
	wakeAt = time.Now().Add(100 * time.Millisecond)
	mu.Unlock()
	if err := st.Services.Delete(ctx, "web", 0); err != nil {
		t.Fatal(err)
	}
	if s := wait("after the service was deleted"); len(s.Services) != 0 {
		t.Fatalf("deleted service still mirrored: %+v", s.Services)
	}
	if s := wait("at the time asked for"); s.Nodes["n1"].LastHeartbeat.IsZero() {
		t.Fatal("mirror missed the heartbeat")
	}
}
