package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/testutil"
)

// openMember starts an embedded member named name on loopback that is ready
// to be joined; initial is empty to bootstrap a new cluster.
func openMember(t *testing.T, name, initial string, port int) *Store {
	t.Helper()
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Open(ctx, Config{DataDir: t.TempDir(), Peer: &PeerConfig{Name: name, AdvertiseHost: "127.0.0.1", Port: port, InitialCluster: initial}})
	if err != nil {
		t.Fatalf("open member %s: %v", name, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func joinMember(t *testing.T, via *Store, name string) *Store {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	peer := "http://127.0.0.1:" + strconv.Itoa(port)
	initial, id, err := via.AddMember(ctx, name, peer)
	if err != nil {
		t.Fatalf("add member %s: %v", name, err)
	}
	s := openMember(t, name, initial, port)
	if s.MemberID() != id {
		t.Fatalf("member %s started with id %x, AddMember said %x", name, s.MemberID(), id)
	}
	if s.PeerURL() != peer {
		t.Fatalf("member %s advertises %s, want %s", name, s.PeerURL(), peer)
	}
	return s
}

// writeVia creates a service through s and fails the test unless it works
// within the deadline (a cluster that just lost a member may need a raft
// election first).
func writeVia(t *testing.T, s *Store, name string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := s.Services.Create(ctx, svc(name))
		cancel()
		if err == nil || errors.Is(err, ErrExists) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("write %s: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestThreeMemberCluster(t *testing.T) {
	t.Parallel()
	a := openMember(t, "a", "", 0)
	b := joinMember(t, a, "b")
	c := joinMember(t, b, "c") // any member can add one
	ctx := context.Background()

	members, err := c.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, m := range members {
		names[m.Name] = m.Started()
	}
	if len(members) != 3 || !names["a"] || !names["b"] || !names["c"] {
		t.Fatalf("members: %+v", members)
	}

	// A write through one member is read through every other.
	writeVia(t, a, "web", 5*time.Second)
	for _, s := range []*Store{b, c} {
		if _, err := s.Services.Get(ctx, "web"); err != nil {
			t.Fatalf("read through %s: %v", s.MemberName(), err)
		}
	}

	// Adding a name or peer URL twice is refused and changes nothing.
	if _, _, err := a.AddMember(ctx, "b", "http://127.0.0.1:1"); !errors.Is(err, ErrExists) {
		t.Fatalf("adding b again: %v, want ErrExists", err)
	}
	if _, _, err := a.AddMember(ctx, "d", b.PeerURL()); !errors.Is(err, ErrExists) {
		t.Fatalf("adding b's peer URL again: %v, want ErrExists", err)
	}
	if _, _, err := a.AddMember(ctx, "d", "not a url"); err == nil {
		t.Fatal("a bad peer URL was accepted")
	}
	if m, _ := a.Members(ctx); len(m) != 3 {
		t.Fatalf("refused adds changed the members: %+v", m)
	}

	// One member dies: the other two keep a quorum and keep serving writes.
	cid := c.MemberID()
	c.Close()
	for i := range 5 {
		writeVia(t, a, fmt.Sprintf("after-a-%d", i), 10*time.Second)
		writeVia(t, b, fmt.Sprintf("after-b-%d", i), 10*time.Second)
	}
	got, _, err := b.Services.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 11 {
		t.Fatalf("b lists %d services, want 11", len(got))
	}

	// The dead member is removed; removing it twice says it is gone.
	if err := a.RemoveMember(ctx, cid); err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveMember(ctx, cid); !errors.Is(err, ErrMemberNotFound) {
		t.Fatalf("second remove: %v, want ErrMemberNotFound", err)
	}
	if m, _ := b.Members(ctx); len(m) != 2 {
		t.Fatalf("members after remove: %+v", m)
	}
	writeVia(t, b, "after-remove", 5*time.Second)
}

func TestMembershipOnExternalIsRefused(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	t.Parallel()
	s := openTest(t, t.TempDir())
	ext, err := Open(context.Background(), Config{Endpoints: []string{s.etcd.Clients[0].Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	if _, _, err := ext.AddMember(context.Background(), "x", "http://127.0.0.1:1"); !errors.Is(err, ErrExternal) {
		t.Fatalf("add on external: %v", err)
	}
	if m, err := ext.Members(context.Background()); err != nil || len(m) != 1 {
		t.Fatalf("members of external: %v %v", m, err)
	}
}

// A data dir made by the single-member default keeps its data when it is
// started again to be joined: its peer URL moves to the advertised one.
func TestSingleMemberDataDirBecomesJoinable(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(ctx, Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	writeVia(t, s, "kept", 5*time.Second)
	old := s.PeerURL()
	s.Close()

	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, Config{DataDir: dir, Peer: &PeerConfig{AdvertiseHost: "localhost", ListenHost: "127.0.0.1", Port: port}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Services.Get(ctx, "kept"); err != nil {
		t.Fatalf("data lost: %v", err)
	}
	want := "http://localhost:" + strconv.Itoa(port)
	m, err := s.Members(ctx)
	if err != nil || len(m) != 1 || len(m[0].PeerURLs) != 1 || m[0].PeerURLs[0] != want || m[0].Name != "berth" {
		t.Fatalf("members: %+v %v (was %s, want %s)", m, err, old, want)
	}
	b := joinMember(t, s, "second")
	if _, err := b.Services.Get(ctx, "kept"); err != nil {
		t.Fatalf("joined member does not see the data: %v", err)
	}
}

func TestLeaderFailover(t *testing.T) {
	t.Parallel()
	a := openMember(t, "a", "", 0)
	b := joinMember(t, a, "b")
	ctx := context.Background()
	la, err := a.Campaign(ctx, "mgr-a", LeaderTTL)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := b.LeaderID(ctx); err != nil || id != "mgr-a" {
		t.Fatalf("leader: %q %v", id, err)
	}
	won := make(chan time.Time, 1)
	go func() {
		if _, err := b.Campaign(ctx, "mgr-b", LeaderTTL); err == nil {
			won <- time.Now()
		}
	}()
	// A's manager dies without resigning: its client stops renewing (the
	// session keeps running in a closed client, so the lease just expires).
	died := time.Now()
	a.cli.Close()
	select {
	case at := <-won:
		d := at.Sub(died)
		t.Logf("new leader %v after the old one stopped renewing (LeaderTTL %v)", d, LeaderTTL)
		if d > LeaderTTL+2*time.Second {
			t.Fatalf("failover took %v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no new leader within 10s")
	}
	_ = la
}

func TestManagerRecords(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.KeepManagerRecord(ctx, ManagerRecord{ID: "m1", APIURL: "https://127.0.0.1:7443"}, ManagerTTL)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		recs, err := s.ManagerRecords(context.Background())
		if err == nil && len(recs) == 1 && recs[0].ID == "m1" && recs[0].APIURL == "https://127.0.0.1:7443" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("record not written: %+v %v", recs, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	recs, err := s.ManagerRecords(context.Background())
	if err != nil || len(recs) != 0 {
		t.Fatalf("record outlived a clean stop: %+v %v", recs, err)
	}
}
