package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver/docker"
	"github.com/berth-project/berth/internal/driver/docker/dockertest"
)

// TestDocker runs services on the real Docker Engine through `berth up`:
// three replicas of a locally built image come up healthy and hardened, a
// container killed behind Berth's back is replaced, an exclusive task gets
// its CPU set and passes an exec health check run inside its container, logs flow, a bad image is a task error that says which, and
// after kill -9 and a restart Berth adopts the containers without
// restarting them.
func TestDocker(t *testing.T) {
	requireRoot(t)
	begun := time.Now()
	cli := dockertest.Client(t)
	suffix := randomHex(3)
	tag := "berth-test/whoami:" + suffix
	dockertest.WhoamiImage(t, cli, tag)

	web, pinned, bad := "dweb-"+suffix, "dpin-"+suffix, "dbad-"+suffix
	t.Cleanup(func() { removeContainers(t, cli, web, pinned, bad) })
	dir := t.TempDir()
	spec := func(name, body string) string {
		p := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(p, []byte("name: "+name+"\n"+body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	webSpec := spec(web, fmt.Sprintf(`replicas: 3
task:
  driver: docker
  image: %s
  pull: never
  ports: [{name: http}]
  health:
    http: {port: http, path: /healthz}
    interval: 500ms
  resources: {cpus: 0.25, memory: 64MiB}
  stop_grace_period: 2s
restart: {condition: any, delay: 500ms}
`, tag))
	pinSpec := spec(pinned, fmt.Sprintf(`task:
  driver: docker
  image: %s
  pull: never
  ports: [{name: http}]
  # An exec check runs inside the container (/berth exists only there).
  health: {exec: [/berth, whoami, --help], interval: 500ms}
  resources: {cpus: 1, cpu_policy: exclusive, memory: 64MiB}
  stop_grace_period: 2s
`, tag))
	b := startBerth(t, webSpec, pinSpec)

	tasks := waitDocker(t, b, web, 3, 90*time.Second)
	for slot := 1; slot <= 3; slot++ {
		tk := tasks[slot]
		c, err := cli.ContainerInspect(context.Background(), tk.Status.ContainerID)
		if err != nil {
			t.Fatalf("slot %d: %v", slot, err)
		}
		hc := c.HostConfig
		if !hc.ReadonlyRootfs || !slices.Equal(hc.CapDrop, []string{"ALL"}) ||
			!slices.ContainsFunc(hc.SecurityOpt, func(s string) bool { return strings.HasPrefix(s, "no-new-privileges") }) ||
			hc.Privileged || hc.NetworkMode.IsHost() || c.Config.User != docker.NobodyUser {
			t.Errorf("slot %d: not hardened: readonly %v capdrop %v secopt %v privileged %v net %s user %q",
				slot, hc.ReadonlyRootfs, hc.CapDrop, hc.SecurityOpt, hc.Privileged, hc.NetworkMode, c.Config.User)
		}
		if want := fmt.Sprintf("/berth.%s.%d.%s", web, slot, tk.ID); c.Name != want {
			t.Errorf("slot %d: container name %q, want %q", slot, c.Name, want)
		}
		if c.Config.Labels[docker.LabelTask] != tk.ID || c.Config.Labels[docker.LabelNode] != tk.NodeID {
			t.Errorf("slot %d: labels %v", slot, c.Config.Labels)
		}
		if hc.NanoCPUs != 250_000_000 || hc.Memory != 64<<20 {
			t.Errorf("slot %d: NanoCPUs %d Memory %d", slot, hc.NanoCPUs, hc.Memory)
		}
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(tk.Ports["http"]) + "/")
		if err != nil {
			t.Errorf("slot %d: the published port does not answer: %v", slot, err)
		} else {
			resp.Body.Close()
		}
	}

	// The exclusive task runs on its allocated CPUs.
	pin := waitDocker(t, b, pinned, 1, 60*time.Second)[1]
	if pin.Allocation == nil || pin.Allocation.CPUs == "" {
		t.Errorf("exclusive task has no allocation: %+v", pin.Allocation)
	} else if c, err := cli.ContainerInspect(context.Background(), pin.Status.ContainerID); err != nil {
		t.Error(err)
	} else if c.HostConfig.CpusetCpus != pin.Allocation.CPUs {
		t.Errorf("exclusive task: CpusetCpus %q, want the allocation %q", c.HostConfig.CpusetCpus, pin.Allocation.CPUs)
	}

	// Logs flow from the engine into `berth service logs`.
	eventually(t, 20*time.Second, func() error {
		out := b.cli(nil, "service", "logs", web)
		if n := strings.Count(out.stdout, "listening on"); out.code != 0 || n < 3 {
			return fmt.Errorf("service logs: %d start lines: %v", n, out)
		}
		return nil
	})
	// With the engine's times, merged in time order (ADR 0034): the lines
	// were written before this call, not stamped as it reads them.
	asked := time.Now()
	stamped := strings.Split(strings.TrimRight(b.mustCLI("service", "logs", web, "--timestamps"), "\n"), "\n")
	var prev time.Time
	for _, l := range stamped {
		ts, _, _ := strings.Cut(l, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || at.Before(begun.Add(-time.Minute)) || !at.Before(asked) || at.Before(prev) {
			t.Errorf("docker task log line %q: time %v (err %v) not after %v and the test's start, and before %v", l, at, err, prev, asked)
		}
		prev = at
	}
	if out := b.mustCLI("service", "logs", web, "--since", time.Now().Add(time.Hour).Format(time.RFC3339)); out != "" {
		t.Errorf("--since an hour ahead printed %q", out)
	}

	// Stats flow from the engine's stats API through the agent to the API.
	eventually(t, 20*time.Second, func() error {
		out := b.cli(nil, "service", "stats", web, "-o", "json")
		var stats []api.TaskStats
		if err := json.Unmarshal([]byte(out.stdout), &stats); err != nil || len(stats) < 3 {
			return fmt.Errorf("service stats: %v (%d rows)", out, len(stats))
		}
		for _, st := range stats {
			if st.Stats == nil || st.Stats.MemoryBytes == 0 || st.Stats.Pids == 0 {
				return fmt.Errorf("task %s: no plausible sample: %+v %q", st.TaskID, st.Stats, st.Error)
			}
		}
		return nil
	})

	// docker kill behind Berth's back: the task fails and is replaced.
	victim := tasks[2]
	if err := cli.ContainerKill(context.Background(), victim.Status.ContainerID, "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		now, err := dockerTasks(b, web)
		if err != nil {
			return err
		}
		if err := convergedDocker(now, 3); err != nil {
			return err
		}
		if now[2].ID == victim.ID || now[2].Status.ContainerID == victim.Status.ContainerID {
			return fmt.Errorf("slot 2 is still task %s", victim.ID)
		}
		return nil
	})
	eventually(t, 30*time.Second, func() error { // the killed container is removed
		if _, err := cli.ContainerInspect(context.Background(), victim.Status.ContainerID); err == nil {
			return fmt.Errorf("the killed container %s still exists", victim.Status.ContainerID[:12])
		}
		return nil
	})

	// A bad image is a task error that says which; the agent keeps going.
	b.mustCLI("deploy", "-f", spec(bad, `task:
  driver: docker
  image: berth-test/no-such-image:1
  pull: never
restart: {condition: none}
`))
	eventually(t, 30*time.Second, func() error {
		all, err := b.client.ServiceTasks(context.Background(), bad, true)
		if err != nil {
			return err
		}
		for _, tk := range all {
			if tk.Status.State.Terminal() && strings.Contains(tk.Status.Err, "no-such-image") && strings.Contains(tk.Status.Err, "not on this node") {
				return nil
			}
		}
		return fmt.Errorf("no task failed with a clear image error: %+v", all)
	})

	// kill -9 and restart: the containers are adopted, not restarted.
	before, err := dockerTasks(b, web)
	if err != nil {
		t.Fatal(err)
	}
	started := map[string]string{}
	for _, tk := range before[1:] {
		c, err := cli.ContainerInspect(context.Background(), tk.Status.ContainerID)
		if err != nil {
			t.Fatal(err)
		}
		started[c.ID] = c.State.StartedAt
	}
	b.kill9()
	b.start()
	time.Sleep(3 * time.Second) // let the restarted agent settle (a restart would show by now)
	after := waitDocker(t, b, web, 3, 60*time.Second)
	for slot := 1; slot <= 3; slot++ {
		if after[slot].ID != before[slot].ID || after[slot].Status.ContainerID != before[slot].Status.ContainerID {
			t.Errorf("slot %d: task %s container %s after the restart, was %s %s", slot,
				after[slot].ID, after[slot].Status.ContainerID, before[slot].ID, before[slot].Status.ContainerID)
		}
	}
	for id, at := range started {
		c, err := cli.ContainerInspect(context.Background(), id)
		if err != nil {
			t.Errorf("container %s is gone after the restart: %v", id[:12], err)
			continue
		}
		if !c.State.Running || c.State.StartedAt != at {
			t.Errorf("container %s was restarted: running %v, started %s, was %s", id[:12], c.State.Running, c.State.StartedAt, at)
		}
	}
}

// dockerTasks returns the live tasks of a service by slot (index 0 unused,
// missing slots zero).
func dockerTasks(b *berth, name string) ([]api.Task, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := b.client.ServiceTasks(ctx, name, false)
	if err != nil {
		return nil, err
	}
	bySlot := make([]api.Task, len(list)+1)
	for _, tk := range list {
		if tk.Slot >= 1 && tk.Slot < len(bySlot) {
			bySlot[tk.Slot] = tk
		}
	}
	return bySlot, nil
}

// convergedDocker checks that tasks (by slot) are n running, healthy tasks
// with containers.
func convergedDocker(tasks []api.Task, n int) error {
	if len(tasks) != n+1 {
		return fmt.Errorf("%d live tasks, want %d", len(tasks)-1, n)
	}
	for slot := 1; slot <= n; slot++ {
		tk := tasks[slot]
		if tk.ID == "" || tk.Status.State != api.TaskRunning || tk.Status.Health != api.HealthHealthy || tk.Status.ContainerID == "" {
			return fmt.Errorf("slot %d: task %q is %s/%s (container %q, error %q)", slot, tk.ID, tk.Status.State, tk.Status.Health, tk.Status.ContainerID, tk.Status.Err)
		}
	}
	return nil
}

func waitDocker(t *testing.T, b *berth, name string, n int, timeout time.Duration) []api.Task {
	t.Helper()
	var out []api.Task
	eventually(t, timeout, func() error {
		tasks, err := dockerTasks(b, name)
		if err != nil {
			return err
		}
		if err := convergedDocker(tasks, n); err != nil {
			return err
		}
		out = tasks
		return nil
	})
	return out
}

// removeContainers removes what this test's services left on the engine.
func removeContainers(t *testing.T, cli *client.Client, services ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, s := range services {
		list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", docker.LabelService+"="+s))})
		if err != nil {
			t.Errorf("cleanup: listing containers: %v", err)
			return
		}
		for _, c := range list {
			t.Logf("cleanup: removing container %s of %s", c.ID[:12], s)
			if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	}
}
