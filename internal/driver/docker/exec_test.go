package docker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/driver/docker"
	"github.com/berth-project/berth/internal/driver/docker/dockertest"
)

// TestExec runs commands inside a running task's container, as exec health
// checks do: the exit code and the output's end come back; a command that
// outlives its context is killed; a program missing in the image is an
// error, not a hang.
func TestExec(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	tag := testImage(t, cli)
	d := newDriver(t, cli, docker.Config{})
	sp := startSpec(t, tag, "forever")
	sp.Env = []string{"GREETING=hello from the task"}
	h := start(t, d, sp)
	ex, ok := h.(driver.Execer)
	if !ok {
		t.Fatal("a docker handle is not a driver.Execer")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	code, out, err := ex.Exec(ctx, []string{"/testprog", "env", "exit", "0"}, []string{"EXTRA=1"})
	if err != nil || code != 0 {
		t.Fatalf("Exec env: code %d, err %v, output %q", code, err, out)
	}
	for _, want := range []string{"env GREETING=hello from the task", "env EXTRA=1"} {
		if !strings.Contains(out, want) {
			t.Errorf("exec output lacks %q (the task's environment plus the extra): %q", want, out)
		}
	}

	code, out, err = ex.Exec(ctx, []string{"/testprog", "eprint", "not ready", "exit", "3"}, nil)
	if err != nil || code != 3 || !strings.Contains(out, "not ready") {
		t.Errorf("Exec exit 3: code %d, err %v, output %q; want code 3 with its stderr", code, err, out)
	}

	// A command that outlives its context is killed, so that timed-out
	// health checks do not pile up in the container.
	marker := "exec-marker-" + sp.TaskID
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	_, _, err = ex.Exec(short, []string{"/testprog", "print", marker, "forever"}, nil)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Exec past its deadline: err %v, want DeadlineExceeded", err)
	}
	id := h.State().ContainerID
	deadline := time.Now().Add(10 * time.Second)
	for {
		top, err := cli.ContainerTop(ctx, id, nil)
		if err != nil {
			t.Fatalf("top: %v", err)
		}
		left := false
		for _, p := range top.Processes {
			if strings.Contains(strings.Join(p, " "), marker) {
				left = true
			}
		}
		if !left {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the timed-out exec still runs in the container 10s later: %v", top.Processes)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if _, _, err := ex.Exec(ctx, []string{"/no/such/program"}, nil); err == nil {
		code, out, _ := ex.Exec(ctx, []string{"/no/such/program"}, nil)
		if code == 0 {
			t.Errorf("Exec of a missing program: code 0, output %q; want an error or a non-zero code", out)
		}
	}
}
