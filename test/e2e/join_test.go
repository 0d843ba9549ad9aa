package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// startDaemon runs `berth ARGS...` (a server or an agent) as b's process,
// logging to b.logPath; b.cleanup stops it.
func startDaemon(b *berth, args ...string) {
	t := b.t
	t.Helper()
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "==== berth %s started at %s\n", args[0], time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(berthBin, args...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Start()
	logf.Close()
	if err != nil {
		t.Fatalf("starting berth %s: %v", args[0], err)
	}
	exited := make(chan struct{})
	b.cmd, b.exited = cmd, exited
	go func() {
		b.waitErr = cmd.Wait()
		close(exited)
	}()
}

func newDaemon(t *testing.T, name string) *berth {
	b := &berth{t: t, dataDir: t.TempDir(), cgParent: "berth-e2e-" + randomHex(6), tasks: map[int]uint64{}}
	b.logPath = filepath.Join(t.TempDir(), name+".log")
	t.Cleanup(b.cleanup)
	return b
}

// TestJoinedAgentRunsAReplica: `berth server` and `berth agent --join`, each
// with its own data directory on loopback. The agent joins with the worker
// token, runs a replica over mTLS, keeps no admin token, and a later start
// without flags is the same node.
func TestJoinedAgentRunsAReplica(t *testing.T) {
	requireRoot(t)
	srv := newDaemon(t, "server")
	startDaemon(srv, "server", "--data-dir", srv.dataDir, "--listen", "127.0.0.1:0")
	eventually(t, 30*time.Second, func() error {
		if srv.hasExited() {
			t.Fatalf("berth server exited: %v\n%s", srv.waitErr, srv.logTail(40))
		}
		c, err := srv.newClient()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := c.Info(ctx); err != nil {
			return err
		}
		srv.client = c
		return nil
	})
	addr := strings.TrimSuffix(srv.client.Addr(), "/api/v1")
	token := strings.TrimSpace(srv.mustCLI("join-token", "worker", "-q"))
	if !strings.HasPrefix(token, "BERTH-1-") {
		t.Fatalf("join-token worker -q printed %q", token)
	}
	adminToken, err := os.ReadFile(filepath.Join(srv.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}

	ag := newDaemon(t, "agent")
	ag.client = srv.client
	agentArgs := []string{"agent", "--data-dir", ag.dataDir, "--cgroup-parent", ag.cgParent, "--hostname", "joined-1",
		"--mesh-bind", "off", "--dns", "off", "--log-listen", "127.0.0.1:0", "--label", "zone=e2e"}
	startDaemon(ag, append(agentArgs, "--join", addr, "--token", token)...)

	var node api.Node
	eventually(t, 30*time.Second, func() error {
		if ag.hasExited() {
			t.Fatalf("berth agent exited: %v\n%s", ag.waitErr, ag.logTail(40))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := srv.client.GetNode(ctx, "joined-1")
		if err != nil {
			return err
		}
		if n.Status != api.NodeReady {
			return fmt.Errorf("node %s is %s", n.ID, n.Status)
		}
		node = n
		return nil
	})
	if node.Role != api.RoleWorker || node.Labels["zone"] != "e2e" {
		t.Fatalf("joined node %+v", node)
	}

	spec, err := os.ReadFile(helloSpec())
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(spec), "replicas: 3", "replicas: 1", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := srv.client.DeployService(ctx, "hello", []byte(doc), "application/yaml"); err != nil {
		t.Fatal(err)
	}
	views, _ := ag.waitConverged("hello", 1, 30*time.Second)
	if views[1].Node != node.ID {
		t.Fatalf("the replica runs on %s, want the joined node %s", views[1].Node, node.ID)
	}

	// The agent's data directory holds its identity, never the admin token.
	if _, err := os.Stat(filepath.Join(ag.dataDir, "admin.token")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("admin.token in the agent's data dir: %v", err)
	}
	_ = filepath.WalkDir(ag.dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(p, string(filepath.Separator)+"logs"+string(filepath.Separator)) {
			return nil
		}
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), strings.TrimSpace(string(adminToken))) || strings.Contains(string(b), token) {
			t.Errorf("%s holds the admin or the join token", p)
		}
		return nil
	})
	key, err := os.Stat(filepath.Join(ag.dataDir, "agent", "identity", "node-key.pem"))
	if err != nil || key.Mode().Perm() != 0o600 {
		t.Fatalf("node key: %v %v", key, err)
	}

	// Restart without --join or a token: the same node, the replica adopted.
	ag.signal(15)
	if _, ok := ag.waitExit(30 * time.Second); !ok {
		t.Fatal("the agent did not stop on SIGTERM")
	}
	startDaemon(ag, agentArgs...)
	eventually(t, 30*time.Second, func() error {
		if ag.hasExited() {
			t.Fatalf("berth agent (restart) exited: %v\n%s", ag.waitErr, ag.logTail(40))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		nodes, err := srv.client.ListNodes(ctx)
		if err != nil {
			return err
		}
		if len(nodes) != 1 || nodes[0].ID != node.ID || nodes[0].LastHeartbeat.Before(time.Now().Add(-2*time.Second)) {
			return fmt.Errorf("nodes after the restart: %+v", nodes)
		}
		return nil
	})
	again, _ := ag.waitConverged("hello", 1, 30*time.Second)
	if again[1].ID != views[1].ID || again[1].PID != views[1].PID {
		t.Fatalf("the replica was replaced across the agent restart: %s pid %d → %s pid %d", views[1].ID, views[1].PID, again[1].ID, again[1].PID)
	}
	if err := srv.client.RemoveService(ctx, "hello"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if ag.alive(views[1].PID) {
			return fmt.Errorf("task process %d still runs", views[1].PID)
		}
		return nil
	})
}
