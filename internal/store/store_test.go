package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/testutil"
)

func openTest(t *testing.T, dir string) *Store {
	t.Helper()
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Open(ctx, Config{DataDir: dir})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func svc(name string) *api.Service {
	n := 1
	return &api.Service{ID: name + "-id", Spec: api.ServiceSpec{Name: name, Replicas: &n}, Version: 1}
}

func TestCRUDAndCompareAndSwap(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir())
	ctx := context.Background()

	a := svc("web")
	if err := s.Services.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	if a.Revision == 0 {
		t.Fatal("create did not set the revision")
	}
	if err := s.Services.Create(ctx, svc("web")); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: got %v, want ErrExists", err)
	}
	got, err := s.Services.Get(ctx, "web")
	if err != nil || got.Revision != a.Revision || got.Spec.Name != "web" {
		t.Fatalf("get: %+v %v", got, err)
	}
	stale := got
	got.Version = 2
	if err := s.Services.Update(ctx, &got); err != nil {
		t.Fatal(err)
	}
	stale.Version = 3
	if err := s.Services.Update(ctx, &stale); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale update: got %v, want ErrConflict", err)
	}
	now, _ := s.Services.Get(ctx, "web")
	if now.Version != 2 {
		t.Fatalf("stale update changed the object: version %d", now.Version)
	}
	if err := s.Services.Delete(ctx, "web", stale.Revision); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale delete: %v", err)
	}
	if err := s.Services.Delete(ctx, "web", now.Revision); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Services.Get(ctx, "web"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := s.Services.Delete(ctx, "web", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
}

func TestTxnIsAllOrNothing(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir())
	ctx := context.Background()
	existing := &api.Task{ID: "t1", DesiredState: api.TaskRunning}
	if err := s.Tasks.Create(ctx, existing); err != nil {
		t.Fatal(err)
	}
	txn := s.Txn()
	s.Tasks.TxnCreate(txn, &api.Task{ID: "t2"})
	s.Tasks.TxnCreate(txn, &api.Task{ID: "t1"}) // exists: the whole batch fails
	if err := txn.Commit(ctx); !errors.Is(err, ErrExists) {
		t.Fatalf("commit: got %v, want ErrExists", err)
	}
	if _, err := s.Tasks.Get(ctx, "t2"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("t2 was written by a failed batch: %v", err)
	}
	a, b := &api.Task{ID: "t3"}, &api.Task{ID: "t4"}
	txn = s.Txn()
	s.Tasks.TxnCreate(txn, a)
	s.Tasks.TxnCreate(txn, b)
	if err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Revision == 0 || a.Revision != b.Revision {
		t.Fatalf("revisions after batch: %d %d", a.Revision, b.Revision)
	}
	list, rev, err := s.Tasks.List(ctx)
	if err != nil || len(list) != 3 || rev < a.Revision {
		t.Fatalf("list: %d items rev %d err %v", len(list), rev, err)
	}
}

func TestWatchFromRevisionMissesNothing(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Nodes.Create(ctx, &api.Node{ID: "n0"}); err != nil {
		t.Fatal(err)
	}
	_, rev, err := s.Nodes.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Changes made after the list but before the watch starts must be seen.
	n1 := &api.Node{ID: "n1", Hostname: "a"}
	if err := s.Nodes.Create(ctx, n1); err != nil {
		t.Fatal(err)
	}
	w := s.Nodes.Watch(ctx, rev)
	n1.Hostname = "b"
	if err := s.Nodes.Update(ctx, n1); err != nil {
		t.Fatal(err)
	}
	if err := s.Nodes.Delete(ctx, "n1", 0); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ  EventType
		host string
	}{{Put, "a"}, {Put, "b"}, {Deleted, "b"}}
	for i, w8 := range want {
		select {
		case ev := <-w:
			if ev.Err != nil || ev.Type != w8.typ || ev.Object.Hostname != w8.host || ev.Key != "n1" {
				t.Fatalf("event %d: %+v", i, ev)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("event %d: none within 10s", i)
		}
	}
}

func TestWatchCompactedRevisionReportsErrCompacted(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir())
	ctx := context.Background()
	n := &api.Node{ID: "n"}
	if err := s.Nodes.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	first := n.Revision
	for i := 0; i < 3; i++ {
		if err := s.Nodes.Update(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Client().Compact(ctx, n.Revision); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var last Event[api.Node]
	for ev := range s.Nodes.Watch(wctx, first-1) {
		last = ev
	}
	if !errors.Is(last.Err, ErrCompacted) {
		t.Fatalf("last event error: %v, want ErrCompacted", last.Err)
	}
}

func TestDataSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir)
	if err := s.Services.Create(context.Background(), svc("keep")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openTest(t, dir)
	got, err := s2.Services.Get(context.Background(), "keep")
	if err != nil || got.Spec.Name != "keep" {
		t.Fatalf("after restart: %+v %v", got, err)
	}
}

func TestExternalEndpointsUseSameCode(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	t.Parallel()
	emb := openTest(t, t.TempDir())
	ctx := context.Background()
	ext, err := Open(ctx, Config{Endpoints: []string{emb.etcd.Clients[0].Addr().String()}, Prefix: "/other/"})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	if err := ext.Services.Create(ctx, svc("x")); err != nil {
		t.Fatal(err)
	}
	// Different prefix: invisible to the embedded store's own collections.
	if _, err := emb.Services.Get(ctx, "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("prefix leak: %v", err)
	}
	if _, err := ext.Services.Get(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	bad, err := Open(ctx, Config{Endpoints: []string{"127.0.0.1:1"}})
	if err == nil {
		bad.Close()
		t.Fatal("open of an unreachable endpoint succeeded")
	}
}

func TestCampaignOneLeaderAtATime(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l1, err := s.Campaign(ctx, "m1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Leadership, 1)
	go func() {
		l2, err := s.Campaign(ctx, "m2", time.Second)
		if err == nil {
			got <- l2
		}
	}()
	select {
	case <-got:
		t.Fatal("second manager became leader while the first held it")
	case <-time.After(300 * time.Millisecond):
	}
	if err := l1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case l2 := <-got:
		l2.Resign(ctx)
	case <-ctx.Done():
		t.Fatal("second manager never became leader after the first resigned")
	}
}

func TestReleaseStaleFreesTheElectionAtOnce(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A manager wins with a long lease and then "dies" without resigning.
	if _, err := s.Campaign(ctx, "m1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseStale(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	l, err := s.Campaign(ctx, "m1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Resign(ctx)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("campaign after release took %v; the stale lease was not revoked", d)
	}
}

func TestEmbeddedMemberRequiresClientCertificate(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	t.Parallel()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "pki"), "test")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.MemberCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := Open(ctx, Config{DataDir: dir, TLS: &TLSFiles{CertFile: cert, KeyFile: key, CAFile: ca.CAFilePath()}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Services.Create(ctx, svc("tls")); err != nil {
		t.Fatal(err)
	}
	addr := s.etcd.Clients[0].Addr().String()
	// Plain text, and TLS without a client certificate, are both refused.
	if _, err := Open(ctx, Config{Endpoints: []string{addr}}); err == nil {
		t.Fatal("a plain-text client reached the member")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err == nil {
		_, err = conn.Write([]byte("GET /version HTTP/1.1\r\nHost: x\r\n\r\n"))
		buf := make([]byte, 1)
		if err == nil {
			_, err = conn.Read(buf)
		}
		conn.Close()
	}
	if err == nil {
		t.Fatal("a TLS client without a certificate was served")
	}
}

func TestFencedWritesFailAfterLeadershipIsLost(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := s.Campaign(ctx, "m1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f := s.Fenced(l)
	if err := f.Services.Create(ctx, svc("while-leader")); err != nil {
		t.Fatalf("write as leader: %v", err)
	}
	if err := l.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	// Another manager takes over; the old one's writes must be refused.
	l2, err := s.Campaign(ctx, "m2", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Resign(ctx)
	if err := f.Services.Create(ctx, svc("after")); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("write after losing leadership: %v, want ErrNotLeader", err)
	}
	if _, err := s.Services.Get(ctx, "after"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the fenced write landed: %v", err)
	}
}

// TestAddrInUse checks that the embedded member's start recognises a port
// taken between its pick and etcd's bind (it then picks again), in the forms
// the error comes in.
func TestAddrInUse(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "listen", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}, true},
		{fmt.Errorf("store: start embedded etcd: %v", "listen tcp 127.0.0.1:1: bind: address already in use"), true},
		{errors.New("permission denied"), false},
	} {
		if got := addrInUse(c.err); got != c.want {
			t.Errorf("addrInUse(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
