package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDataDirInUse: a second manager or agent on a data directory in use
// fails at once and names the holder. It used to wait forever on etcd's
// database lock, print nothing and ignore SIGINT and SIGTERM (b.cli fails
// the test when a run takes 30 s).
func TestDataDirInUse(t *testing.T) {
	t.Parallel()
	b := startBerth(t)
	want := fmt.Sprintf("data directory %s is in use by berth (pid %d)", b.dataDir, b.pid())
	for _, args := range [][]string{
		{"up", "--listen", "127.0.0.1:0", "--mesh-bind", "off", "--dns", "off"},
		{"server", "--listen", "127.0.0.1:0"},
		{"agent", "--mesh-bind", "off", "--dns", "off"},
	} {
		start := time.Now()
		res := b.cli(nil, args...)
		checkOneLineError(t, strings.Join(args, " "), res, want)
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("berth %s took %s to refuse", args[0], d)
		}
	}
	// The first one is untouched.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.client.Info(ctx); err != nil {
		t.Fatalf("the running berth up after the refused ones: %v", err)
	}
}

// TestUpStopsWhileStarting: SIGINT stops `berth up` even while it waits for
// a store that does not answer.
func TestUpStopsWhileStarting(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	dir := t.TempDir()
	ln := freeTCPPort(t) // nothing listens there
	cmd := exec.Command(berthBin, "up", "--data-dir", dir, "--listen", "127.0.0.1:0",
		"--etcd-endpoints", fmt.Sprintf("http://127.0.0.1:%d", ln), "--mesh-bind", "off", "--dns", "off", "--task-dns", "off",
		"--cgroup-parent", "berth-e2e-"+randomHex(6))
	cmd.Env = cleanEnv()
	logf, err := os.Create(filepath.Join(dir, "up.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	})
	// Give it time to be inside its start-up.
	select {
	case <-done:
		t.Fatalf("berth up ended before the signal: %v", waitErr)
	case <-time.After(2 * time.Second):
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("berth up still runs 15s after SIGINT")
	}
}
