package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
)

// Phases of a task as the manager sees it in the property test.
const (
	phaseUnassigned = iota
	phaseRunning    // in the set, desired running
	phaseShutdown   // in the set, desired shutdown
	phaseRemoved    // gone from the set
)

// TestLifecycleProperty throws random assignment sets, process exits and
// start failures at a real agent and checks that every task only ever moves
// one step forward, starts only while wanted running, is started at most
// once, and ends where the manager wants it.
func TestLifecycleProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		h := newHarness(t)
		n := rapid.IntRange(1, 4).Draw(rt, "tasks")
		tasks := make([]api.Task, n)
		startErr := make(map[string]error)
		for i := range tasks {
			tasks[i] = newTask(fmt.Sprintf("t%d", i))
			switch rapid.IntRange(0, 5).Draw(rt, fmt.Sprintf("start-%d", i)) {
			case 4:
				startErr[tasks[i].ID] = fmt.Errorf("bad: %w", driver.ErrInvalid)
			case 5:
				startErr[tasks[i].ID] = errBoom
			}
		}
		h.d.StartFunc = func(ctx context.Context, spec driver.StartSpec) error { return startErr[spec.TaskID] }
		// A restart delay keeps some runners waiting while the sets change
		// under them; it counts from the task's first assignment.
		delay := make([]time.Duration, n)
		for i := range delay {
			if d := rapid.IntRange(0, 10).Draw(rt, fmt.Sprintf("delay-%d", i)); d > 3 {
				delay[i] = time.Duration(d) * time.Millisecond
			}
		}
		h.start()
		defer h.stop()
		// Sets sent before the agent connects would collapse into one.
		eventually(t, func() bool { return h.m.Streams() == 1 }, "assignment stream open")

		phase := make([]int, n)
		exited := make([]bool, n)
		steps := rapid.IntRange(1, 12).Draw(rt, "steps")
		for s := 0; s < steps; s++ {
			if rapid.IntRange(0, 2).Draw(rt, "op") < 2 {
				var set []api.Task
				for i := range tasks {
					next := phase[i] + rapid.IntRange(0, 2).Draw(rt, "move")
					if phase[i] == phaseUnassigned && next != phaseUnassigned && delay[i] > 0 {
						tasks[i].NotBefore = time.Now().Add(delay[i])
					}
					phase[i] = min(next, phaseRemoved)
					switch phase[i] {
					case phaseRunning:
						set = append(set, tasks[i])
					case phaseShutdown:
						set = append(set, shutdown(tasks[i]))
					}
				}
				h.m.Assign(set...)
			} else {
				i := rapid.IntRange(0, n-1).Draw(rt, "exit")
				if tk := h.d.Task(tasks[i].ID); tk != nil {
					tk.Exit(driver.Exit{Code: rapid.IntRange(0, 2).Draw(rt, "code")})
					exited[i] = true
				}
			}
			if rapid.Bool().Draw(rt, "pause") {
				time.Sleep(time.Millisecond)
			}
		}

		// Wait until the node settles where the manager wants it.
		settled := func(i int) (bool, string) {
			id := tasks[i].ID
			st, reported := h.m.Status(id)
			ft := h.d.Task(id)
			alive := ft != nil && !ft.Exited()
			switch phase[i] {
			case phaseUnassigned:
				return !reported && ft == nil, "never touched"
			case phaseRunning:
				if exited[i] || startErr[id] != nil {
					return reported && st.State.Terminal() && !alive, "ended and reported"
				}
				if reported && st.State.Terminal() {
					// It was started and ended by an exit drawn for it.
					return !alive, "ended"
				}
				return alive && reported && st.State == api.TaskRunning, "running and reported"
			case phaseShutdown:
				return reported && st.State.Terminal() && !alive, "ended and reported"
			default:
				return !alive, "not running"
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for i := range tasks {
			for {
				ok, want := settled(i)
				if ok {
					break
				}
				if time.Now().After(deadline) {
					st, _ := h.m.Status(tasks[i].ID)
					rt.Fatalf("%s (phase %d, exited %v): not %s; last report %+v", tasks[i].ID, phase[i], exited[i], want, st)
				}
				time.Sleep(time.Millisecond)
			}
		}

		for i := range tasks {
			id := tasks[i].ID
			prev := api.TaskAssigned
			for _, tr := range h.transitionsOf(id) {
				if tr.from != prev || !validStep(tr.from, tr.to) {
					rt.Fatalf("%s: step %s → %s after %s", id, tr.from, tr.to, prev)
				}
				if tr.to == api.TaskStarting && tr.wanted != api.TaskRunning {
					rt.Fatalf("%s: started while wanted %s", id, tr.wanted)
				}
				prev = tr.to
			}
			if s := h.d.Starts(id); s > 1 {
				rt.Fatalf("%s started %d times", id, s)
			}
			hist := h.m.History(id)
			for j := 1; j < len(hist); j++ {
				if hist[j].State.Before(hist[j-1].State) || (hist[j-1].State.Terminal() && hist[j].State != hist[j-1].State) {
					rt.Fatalf("%s: reported %s after %s", id, hist[j].State, hist[j-1].State)
				}
			}
		}
	})
}
