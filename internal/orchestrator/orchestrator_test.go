package orchestrator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
)

// One service whose tasks do not fit in one etcd request must not stop every
// other service from converging.
func TestOneLargeServiceDoesNotStallOthers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mk := func(id, name string, replicas int, env map[string]string) {
		spec := api.ServiceSpec{Name: name, Replicas: &replicas, Task: api.TaskSpec{Command: []string{"x"}, Env: env}}
		spec.Normalize()
		if err := spec.Validate(); err != nil {
			t.Fatal(err)
		}
		svc := api.Service{ID: id, Spec: spec, Version: 1}
		if err := st.Services.Create(ctx, &svc); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{}
	for i := range 8 {
		env[fmt.Sprintf("V%d", i)] = strings.Repeat("x", 100000) // 800 kB: a valid spec
	}
	mk("a-big", "big", 2, env)
	mk("b-small", "small", 3, nil)

	go New(Config{Store: st}).Run(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		tasks, _, err := st.Tasks.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, tk := range tasks {
			if tk.ServiceID == "b-small" {
				n++
			}
		}
		if n == 3 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("service small has %d of 3 tasks after 10s: the orchestrator is stuck on service big", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
