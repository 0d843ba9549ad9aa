package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
)

var testNow = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func TestStoreRoundTrip(t *testing.T) {
	s := &store{dir: filepath.Join(t.TempDir(), "agent")}
	if err := s.init(); err != nil {
		t.Fatal(err)
	}
	rec := taskRecord{
		Task:   newTask("t-1"),
		Driver: &driver.State{Driver: "process", TaskID: "t-1", PID: 42, StartTime: 7},
		Status: api.TaskStatus{State: api.TaskRunning, PID: 42, Health: api.HealthHealthy},
	}
	if err := s.saveTask(rec); err != nil {
		t.Fatal(err)
	}
	// Leftovers of an interrupted write and foreign files are skipped;
	// a corrupt file is reported and skipped.
	for name, data := range map[string]string{".t-2.json.tmp123": "{", "README": "x", "bad.json": "{"} {
		if err := os.WriteFile(filepath.Join(s.tasksDir(), name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	recs, errs := s.loadTasks()
	defer func() {
		// init removes the leftovers of interrupted writes.
		if err := s.init(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(s.tasksDir(), ".t-2.json.tmp123")); !os.IsNotExist(err) {
			t.Errorf("temporary file left after init: %v", err)
		}
	}()
	if len(recs) != 1 || len(errs) != 1 {
		t.Fatalf("loaded %d records, %d errors (%v)", len(recs), len(errs), errs)
	}
	got := recs[0]
	if got.Task.ID != "t-1" || got.Driver.PID != 42 || got.Status.Health != api.HealthHealthy || got.Task.Spec.StopGracePeriod != rec.Task.Spec.StopGracePeriod {
		t.Errorf("round trip: %+v", got)
	}
	if err := s.removeTask("t-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.removeTask("t-1"); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if err := s.saveTask(taskRecord{Task: api.Task{ID: "../escape"}}); err == nil {
		t.Error("saved a task with a path in its id")
	}
	fi, err := os.Stat(s.dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("agent dir mode %v, %v", fi.Mode(), err)
	}
}

func TestTombstonePruning(t *testing.T) {
	h := newHarness(t)
	a, err := New(h.cfg, h.m)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.store.init(); err != nil {
		t.Fatal(err)
	}
	a.endedMax = 2
	logs := a.store.logsDir()
	for _, n := range []string{"oldtask-0001.log", "oldtask-0001.1.log", "oldtask-00012.log"} {
		if err := os.WriteFile(filepath.Join(logs, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	a.mu.Lock()
	a.ended["oldtask-0001"] = tombstone{Ended: now.Add(-25 * time.Hour)}
	a.ended["b"] = tombstone{Ended: now.Add(-3 * time.Minute)}
	a.ended["c"] = tombstone{Ended: now.Add(-2 * time.Minute)}
	a.ended["d"] = tombstone{Ended: now.Add(-time.Minute)}
	a.pruneEndedLocked()
	_, old := a.ended["oldtask-0001"]
	_, b := a.ended["b"]
	n := len(a.ended)
	a.mu.Unlock()
	if old || b || n != 2 {
		t.Errorf("after pruning: old %v, b %v, %d kept", old, b, n)
	}
	ents, _ := os.ReadDir(logs)
	if len(ents) != 1 || ents[0].Name() != "oldtask-00012.log" {
		t.Errorf("logs left: %v (only another task's file should remain)", ents)
	}
}

// The manager may learn of a task's end before the runner's goroutine
// returns; the task is then finalized when it does.
func TestFinalizeWaitsForRunner(t *testing.T) {
	h := newHarness(t)
	a, err := New(h.cfg, h.m)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.store.init(); err != nil {
		t.Fatal(err)
	}
	tk := newTask("t-race")
	if err := a.store.saveTask(taskRecord{Task: tk, Status: api.TaskStatus{State: api.TaskComplete}}); err != nil {
		t.Fatal(err)
	}
	r := newRunner(a, tk)
	a.mu.Lock()
	a.runners[tk.ID] = r
	a.mu.Unlock()
	a.finalize(tk.ID) // the goroutine has not returned yet
	if _, err := os.Stat(filepath.Join(a.store.tasksDir(), "t-race.json")); err != nil {
		t.Fatalf("finalized while the runner still ran: %v", err)
	}
	if r.markExited() {
		a.finalize(tk.ID)
	} else {
		t.Fatal("runner not asked to finalize on exit")
	}
	if _, err := os.Stat(filepath.Join(a.store.tasksDir(), "t-race.json")); !os.IsNotExist(err) {
		t.Errorf("state file left: %v", err)
	}
	if _, ok := a.taskDriver(tk.ID); !ok {
		t.Error("no tombstone: logs would be lost")
	}
}
