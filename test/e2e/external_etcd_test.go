package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/berth-project/berth/api"
)

// TestManagersShareExternalEtcd runs the other HA layout: two
// `berth server` processes, neither joined to the other, both pointed at
// one external etcd (started here, in the test process, on free loopback
// ports). They must act as one cluster: one admin token (the second adopts
// the first's), a service deployed through one is served by the other, and
// exactly one of them leads.
func TestManagersShareExternalEtcd(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	loop := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{loop}, []url.URL{loop}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{loop}, []url.URL{loop}
	cfg.InitialCluster = cfg.Name + "=" + loop.String()
	cfg.Logger, cfg.LogLevel = "zap", "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("external etcd did not start")
	}
	endpoint := "http://" + e.Clients[0].Addr().String()

	type server struct {
		dir  string
		cmd  *exec.Cmd
		done chan error
	}
	start := func(name string) *server {
		s := &server{dir: filepath.Join(t.TempDir(), name), done: make(chan error, 1)}
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		logf, err := os.Create(filepath.Join(s.dir, "server.log"))
		if err != nil {
			t.Fatal(err)
		}
		s.cmd = exec.Command(berthBin, "server", "--data-dir", s.dir, "--listen", "127.0.0.1:0",
			"--etcd-endpoints", endpoint)
		s.cmd.Env = cleanEnv()
		s.cmd.Stdout, s.cmd.Stderr = logf, logf
		if err := s.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logf.Close()
		go func() { s.done <- s.cmd.Wait() }()
		t.Cleanup(func() {
			_ = s.cmd.Process.Signal(syscall.SIGTERM) // the process we started, by its pid
			select {
			case <-s.done:
			case <-time.After(30 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.done
			}
			if t.Failed() {
				out, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
				t.Logf("%s log:\n%s", name, out)
			}
		})
		return s
	}
	client := func(s *server) (*api.Client, error) {
		read := func(f string) (string, error) {
			b, err := os.ReadFile(filepath.Join(s.dir, f))
			return strings.TrimSpace(string(b)), err
		}
		addr, err := read("api.addr")
		if err != nil {
			return nil, err
		}
		tok, err := read("admin.token")
		if err != nil {
			return nil, err
		}
		ca, err := os.ReadFile(filepath.Join(s.dir, "ca.pem"))
		if err != nil {
			return nil, err
		}
		return api.NewClient(api.ClientConfig{Addr: addr, Token: tok, CACertPEM: ca})
	}
	// One after the other, so that the first seeds the store (CA, token).
	a := start("a")
	var ca *api.Client
	eventually(t, 30*time.Second, func() (err error) {
		if ca, err = client(a); err != nil {
			return err
		}
		_, err = ca.Info(context.Background())
		return err
	})
	b := start("b")
	var cb *api.Client
	eventually(t, 30*time.Second, func() (err error) {
		if cb, err = client(b); err != nil {
			return err
		}
		_, err = cb.Info(context.Background())
		return err
	})
	ta, _ := os.ReadFile(filepath.Join(a.dir, "admin.token"))
	tb, _ := os.ReadFile(filepath.Join(b.dir, "admin.token"))
	if strings.TrimSpace(string(ta)) != strings.TrimSpace(string(tb)) {
		t.Fatal("the second manager did not adopt the cluster's admin token")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := ca.Deploy(ctx, "shared", []byte("task: {command: [berth, whoami, --port, \"${PORT_HTTP}\"], ports: [{name: http}]}\n"), "application/yaml"); err != nil {
		t.Fatalf("deploy through a: %v", err)
	}
	if svc, err := cb.GetService(ctx, "shared"); err != nil || svc.Spec.Name != "shared" {
		t.Fatalf("b does not serve the service deployed through a: %+v %v", svc, err)
	}
	eventually(t, 20*time.Second, func() error {
		ia, err := ca.Info(ctx)
		if err != nil {
			return err
		}
		ib, err := cb.Info(ctx)
		if err != nil {
			return err
		}
		if ia.Leader == ib.Leader {
			return fmt.Errorf("leaders: a %v, b %v; want exactly one", ia.Leader, ib.Leader)
		}
		return nil
	})
}
