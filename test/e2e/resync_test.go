package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// spinSpec is hello without resource reservations, so that 40 replicas fit
// on a small machine.
const spinSpec = `name: spin
replicas: 1
task:
  driver: process
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports:
    - name: http
  health:
    http: {port: http, path: /healthz}
    interval: 1s
restart: {condition: any, delay: 1s}
`

// TestKillDuringScaleUpReportsTasks is issue 12 item 7: `berth up` is killed
// with SIGKILL in the middle of a scale-up, so that reports of tasks that
// started (and turned healthy) are lost with it. Restarted on the same data
// directory, its agent must tell the manager what runs: every task running
// and healthy within seconds, none left assigned or starting.
func TestKillDuringScaleUpReportsTasks(t *testing.T) {
	t.Parallel()
	b := startBerth(t)
	spec := filepath.Join(t.TempDir(), "spin.yaml")
	if err := os.WriteFile(spec, []byte(spinSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	b.mustCLI("deploy", "-f", spec)
	b.waitConverged("spin", 1, deployTimeout)

	const n = 40
	b.mustCLI("service", "scale", "spin=40")
	// Kill it while tasks come up, right after the agent saved a task as
	// healthy: its report to the manager is then most likely still on its
	// way (reports of a burst are gathered for 10 ms) and dies with it.
	recs := filepath.Join(b.dataDir, "agent", "tasks")
	healthyRecords := func() int {
		files, _ := filepath.Glob(filepath.Join(recs, "*.json"))
		k := 0
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			var rec struct {
				Status api.TaskStatus `json:"status"`
			}
			if json.Unmarshal(data, &rec) == nil && rec.Status.Health == api.HealthHealthy {
				k++
			}
		}
		return k
	}
	deadline := time.Now().Add(60 * time.Second)
	for k := healthyRecords(); ; {
		now := healthyRecords()
		if now > k && now >= 5 {
			t.Logf("killing berth up right after its agent saved task %d of %d as healthy", now, n)
			break
		}
		k = now
		if time.Now().After(deadline) {
			t.Fatalf("the scale-up did not get going in 60s (%d tasks saved healthy)", now)
		}
		time.Sleep(time.Millisecond)
	}
	b.kill9()
	saved := savedTasks(t, recs)
	for _, pid := range saved {
		b.record([]api.TaskView{{PID: pid}}) // for cleanup, and for alive()
	}

	apiUp := b.start()
	// The restarted manager leads and replaces tasks the agent lost track
	// of; everything else must be reported as it is.
	views, took := b.waitConverged("spin", n, 60*time.Second)
	t.Logf("%d replicas running and healthy %v after the API answered again", n, took.Round(time.Millisecond))
	if took := time.Since(apiUp); took > 20*time.Second {
		t.Errorf("converging after the restart took %v, want within 20s", took)
	}
	// Every task the agent saved before the kill is adopted, not replaced.
	for id, pid := range saved {
		found := false
		for _, v := range views[1:] {
			if v.ID == id {
				found = true
				if v.PID != pid {
					t.Errorf("task %s ran as pid %d before the kill, %d after", id, pid, v.PID)
				}
			}
		}
		if !found {
			t.Errorf("task %s (pid %d), running before the kill, was replaced: %s", id, pid, summary(views))
		}
	}
	t.Logf("the %d tasks saved before the kill were adopted", len(saved))
}

// savedTasks returns the pid of every task the agent saved as running.
func savedTasks(t *testing.T, dir string) map[string]int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rec struct {
			Task   api.Task       `json:"task"`
			Status api.TaskStatus `json:"status"`
		}
		if err := json.Unmarshal(data, &rec); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if rec.Status.State == api.TaskRunning {
			out[rec.Task.ID] = rec.Status.PID
		}
	}
	return out
}
