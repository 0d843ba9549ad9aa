package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// managerProc is one `berth server` process run by a test.
type managerProc struct {
	t       *testing.T
	name    string
	dataDir string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	client  *api.Client
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startManager runs `berth server` on loopback with its own data dir, API
// port and etcd peer port, plus args, and waits until its API answers.
func startManager(t *testing.T, name string, args ...string) *managerProc {
	t.Helper()
	m := &managerProc{t: t, name: name, dataDir: t.TempDir()}
	m.logPath = filepath.Join(m.dataDir, "server.log")
	logf, err := os.Create(m.logPath)
	if err != nil {
		t.Fatal(err)
	}
	all := append([]string{"server", "--data-dir", m.dataDir, "--listen", "127.0.0.1:0",
		"--etcd-peer-port", strconv.Itoa(freeTCPPort(t)), "--log-level", "debug"}, args...)
	m.cmd = exec.Command(berthBin, all...)
	m.cmd.Env = cleanEnv()
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	err = m.cmd.Start()
	logf.Close()
	if err != nil {
		t.Fatal(err)
	}
	m.exited = make(chan struct{})
	go func() { m.cmd.Wait(); close(m.exited) }()
	t.Cleanup(m.stop)
	eventually(t, 60*time.Second, func() error {
		select {
		case <-m.exited:
			t.Fatalf("manager %s exited while starting:\n%s", name, m.logTail(30))
		default:
		}
		b := &berth{dataDir: m.dataDir}
		c, err := b.newClient()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := c.Info(ctx); err != nil {
			return err
		}
		m.client = c
		return nil
	})
	return m
}

// addr is the manager's API URL as it wrote it for clients.
func (m *managerProc) addr() string {
	b, err := os.ReadFile(filepath.Join(m.dataDir, "api.addr"))
	if err != nil {
		m.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (m *managerProc) logTail(n int) string {
	b := &berth{logPath: m.logPath}
	return b.logTail(n)
}

func (m *managerProc) running() bool {
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// kill9 sends SIGKILL to this manager (by its own process handle) and waits.
func (m *managerProc) kill9() {
	if m.running() {
		_ = m.cmd.Process.Signal(syscall.SIGKILL)
	}
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		m.t.Fatalf("manager %s still runs 10s after SIGKILL", m.name)
	}
}

func (m *managerProc) stop() {
	if m.running() {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-time.After(30 * time.Second):
			m.t.Errorf("manager %s still runs 30s after SIGTERM; killing it", m.name)
			m.kill9()
		}
	}
	if m.t.Failed() {
		m.t.Logf("manager %s log (last lines):\n%s", m.name, m.logTail(40))
	}
}

func (m *managerProc) isLeader() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := m.client.Info(ctx)
	return info.Leader, err
}

// startHAAgent runs `berth agent` against manager m (admin token, local
// mode) in its own data dir and cgroup parent, as a *berth so that the
// harness's cleanup kills and removes what its tasks leave.
func startHAAgent(t *testing.T, m *managerProc) *berth {
	t.Helper()
	requireRoot(t)
	b := &berth{t: t, dataDir: t.TempDir(), cgParent: "berth-e2e-" + randomHex(6), tasks: map[int]uint64{}}
	b.logPath = filepath.Join(b.dataDir, "agent.log")
	logf, err := os.Create(b.logPath)
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(filepath.Join(m.dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(berthBin, "agent", "--data-dir", b.dataDir, "--addr", m.addr(), "--ca", filepath.Join(m.dataDir, "ca.pem"),
		"--cgroup-parent", b.cgParent, "--mesh-bind", "off", "--dns", "off", "--log-listen", "127.0.0.1:0", "--stop-tasks",
		"--hostname", "ha-agent-"+randomHex(3))
	cmd.Env = append(cleanEnv(), "BERTH_TOKEN="+strings.TrimSpace(string(token)))
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Start()
	logf.Close()
	if err != nil {
		t.Fatal(err)
	}
	b.cmd, b.exited, b.client = cmd, make(chan struct{}), m.client
	go func() { b.waitErr = cmd.Wait(); close(b.exited) }()
	t.Cleanup(b.cleanup)
	return b
}

// TestHAManagers runs three managers that joined one another with the
// manager token, kills the leader (SIGKILL) during a deploy, and checks that
// the deploy completes through another manager, that a new leader is
// elected within 5 s, and that no acknowledged spec write is lost.
func TestHAManagers(t *testing.T) {
	requireRoot(t)
	m1 := startManager(t, "m1")
	ctx := context.Background()
	toks, err := m1.client.JoinTokens(ctx)
	if err != nil {
		t.Fatalf("join tokens: %v", err)
	}

	// A worker token cannot join a manager, and changes nothing.
	_, err = m1.client.JoinManager(ctx, api.ManagerJoinRequest{Token: toks.Worker, CSRPEM: "x", Name: "intruder",
		PeerURL: "https://127.0.0.1:1", APIURL: "https://127.0.0.1:2"})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 403 {
		t.Fatalf("worker token on the manager join: %v, want a 403", err)
	}
	// Nor can a manager join with it from the command line.
	bad := exec.Command(berthBin, "server", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--join", m1.addr(), "--token", toks.Worker)
	bad.Env = cleanEnv()
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "worker token") {
		t.Fatalf("berth server --join with a worker token: %v\n%s", err, out)
	}

	m2 := startManager(t, "m2", "--join", m1.addr(), "--token", toks.Manager)
	m3 := startManager(t, "m3", "--join", m2.addr(), "--token", toks.Manager) // any manager admits one
	ms := []*managerProc{m1, m2, m3}

	// Every manager serves the API and lists the three, one leader.
	var leader *managerProc
	eventually(t, 20*time.Second, func() error {
		leader = nil
		for _, m := range ms {
			list, err := m.client.ClusterManagers(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			ready, leaders := 0, 0
			for _, x := range list {
				if x.Status == api.ManagerReady {
					ready++
				}
				if x.Leader {
					leaders++
				}
			}
			if len(list) != 3 || ready != 3 || leaders != 1 {
				return fmt.Errorf("%s lists %+v", m.name, list)
			}
			if l, err := m.isLeader(); err != nil {
				return err
			} else if l {
				leader = m
			}
		}
		if leader == nil {
			return errors.New("no manager says it leads")
		}
		return nil
	})
	var others []*managerProc
	for _, m := range ms {
		if m != leader {
			others = append(others, m)
		}
	}
	t.Logf("leader is %s", leader.name)
	via, writer := others[0], others[1]
	agent := startHAAgent(t, via)
	eventually(t, 30*time.Second, func() error {
		nodes, err := via.client.ListNodes(ctx)
		if err != nil || len(nodes) != 1 || nodes[0].Status != api.NodeReady {
			return fmt.Errorf("nodes %+v %v", nodes, err)
		}
		return nil
	})

	// Spec writes through the third manager go on while the leader dies;
	// every one acknowledged must be there afterwards.
	spec, err := os.ReadFile(helloSpec())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var acked []string
	stopWriting := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stopWriting:
				return
			default:
			}
			name := fmt.Sprintf("ha-%03d", i)
			doc := fmt.Sprintf("name: %s\nreplicas: 0\ntask:\n  driver: process\n  command: [sleep, \"60\"]\n", name)
			wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, _, err := writer.client.DeployService(wctx, name, []byte(doc), "application/yaml")
			cancel()
			if err == nil {
				mu.Lock()
				acked = append(acked, name)
				mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	if _, _, err := via.client.DeployService(ctx, "hello", spec, "application/yaml"); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	killed := time.Now()
	leader.kill9()

	// A new leader among the two left, within 5 s.
	var newLeader *managerProc
	took := eventually(t, 15*time.Second, func() error {
		for _, m := range others {
			if l, err := m.isLeader(); err == nil && l {
				newLeader = m
				return nil
			}
		}
		return errors.New("no leader yet")
	})
	failover := time.Since(killed)
	t.Logf("LEADER FAILOVER: %s took over %v after SIGKILL of %s (poll %v)", newLeader.name, failover.Round(time.Millisecond), leader.name, took.Round(time.Millisecond))
	if failover > 5*time.Second {
		t.Errorf("new leader after %v, want within 5s", failover)
	}

	// The deploy completes through another manager.
	_, conv := agent.waitConverged("hello", 3, 60*time.Second)
	t.Logf("hello converged %v after the kill", conv.Round(time.Millisecond))

	close(stopWriting)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged during the failover")
	}
	for _, m := range others {
		svcs, err := m.client.ListServices(ctx)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, s := range svcs {
			have[s.Spec.Name] = true
		}
		for _, n := range acked {
			if !have[n] {
				t.Errorf("%s: acknowledged service %s is lost", m.name, n)
			}
		}
	}
	t.Logf("%d spec writes acknowledged around the failover, none lost", len(acked))

	// The dead manager shows as down; it is removed through another, and the
	// two left keep serving.
	eventually(t, 15*time.Second, func() error {
		list, err := newLeader.client.ClusterManagers(ctx)
		if err != nil {
			return err
		}
		for _, x := range list {
			if x.Status == api.ManagerDown {
				return nil
			}
		}
		return fmt.Errorf("no manager down in %+v", list)
	})
	list, _ := newLeader.client.ClusterManagers(ctx)
	for _, x := range list {
		if x.Status == api.ManagerDown {
			if err := newLeader.client.RemoveManager(ctx, x.ID, false); err != nil {
				t.Fatalf("remove the dead manager: %v", err)
			}
		}
	}
	list, err = via.client.ClusterManagers(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("after removal: %+v %v", list, err)
	}
	if _, err := via.client.ScaleService(ctx, "hello", 2); err != nil {
		t.Fatalf("scale after removal: %v", err)
	}
	agent.waitConverged("hello", 2, 30*time.Second)
}
