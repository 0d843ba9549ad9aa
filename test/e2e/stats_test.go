package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// TestServiceStats: each running replica's resource use, measured from its
// cgroups by its agent, reaches the API and the CLI; CPU burnt by a request
// shows up in the replica's CPU time.
func TestServiceStats(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	b := startBerth(t, helloSpec())
	tasks, _ := b.waitConverged("hello", 3, deployTimeout)
	var stats []api.TaskStats
	read := func() {
		t.Helper()
		if err := json.Unmarshal([]byte(b.mustCLI("service", "stats", "hello", "-o", "json")), &stats); err != nil {
			t.Fatal(err)
		}
	}
	read()
	if len(stats) != 3 {
		t.Fatalf("%d stats rows, want 3: %+v", len(stats), stats)
	}
	before := map[string]uint64{}
	for _, s := range stats {
		if s.Stats == nil || s.Error != "" {
			t.Fatalf("task %s: no stats: %q", s.TaskID, s.Error)
		}
		if s.Stats.MemoryBytes == 0 || s.Stats.Pids == 0 || s.Stats.CPUNanos == 0 {
			t.Errorf("task %s: implausible sample %+v", s.TaskID, *s.Stats)
		}
		before[s.TaskID] = s.Stats.CPUNanos
	}
	// Burn 300 ms of CPU in slot 1's replica: its CPU time must grow by that.
	one := tasks[1]
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(one.Ports["http"]) + "/cpu?ms=300")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	eventually(t, 10*time.Second, func() error {
		read()
		for _, s := range stats {
			if s.TaskID == one.ID && s.Stats != nil && s.Stats.CPUNanos >= before[one.ID]+uint64(250*time.Millisecond) {
				return nil
			}
		}
		return fmt.Errorf("slot 1's CPU time did not grow by the 300 ms burnt: %+v", stats)
	})
	if out := b.mustCLI("service", "stats", "hello"); len(out) == 0 {
		t.Fatal("no table")
	}
}
