package store

import (
	"context"
	"errors"
	"testing"
)

func TestClusterCACreateIfAbsent(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir())
	ctx := context.Background()
	if _, err := s.ClusterCA(ctx, nil); !errors.Is(err, ErrNoClusterCA) {
		t.Fatalf("empty store: %v, want ErrNoClusterCA", err)
	}
	first, err := s.ClusterCA(ctx, func() (ClusterCARecord, error) { return ClusterCARecord{CertPEM: "A", KeyPEM: "a"}, nil })
	if err != nil || first.CertPEM != "A" {
		t.Fatalf("create: %+v %v", first, err)
	}
	// A second manager with another CA gets the stored one; create is not
	// called.
	again, err := s.ClusterCA(ctx, func() (ClusterCARecord, error) {
		t.Error("create called although a CA is stored")
		return ClusterCARecord{CertPEM: "B", KeyPEM: "b"}, nil
	})
	if err != nil || again.CertPEM != "A" || again.KeyPEM != "a" {
		t.Fatalf("second: %+v %v", again, err)
	}
	if got := first.String(); got != "cluster CA" {
		t.Errorf("String() = %q leaks or changed", got)
	}
}

func TestJoinTokensRotateWithCAS(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir())
	ctx := context.Background()
	if _, err := s.JoinTokens(ctx, nil); !errors.Is(err, ErrNoJoinTokens) {
		t.Fatalf("empty store: %v", err)
	}
	rec, err := s.JoinTokens(ctx, func() (JoinTokensRecord, error) { return JoinTokensRecord{Worker: "w1", Manager: "m1"}, nil })
	if err != nil || rec.Worker != "w1" || rec.Revision == 0 {
		t.Fatalf("create: %+v %v", rec, err)
	}
	stale := rec
	rec.Worker = "w2"
	if err := s.SetJoinTokens(ctx, &rec); err != nil {
		t.Fatal(err)
	}
	stale.Manager = "m2"
	if err := s.SetJoinTokens(ctx, &stale); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale rotate: %v, want ErrConflict", err)
	}
	got, err := s.JoinTokens(ctx, nil)
	if err != nil || got.Worker != "w2" || got.Manager != "m1" || got.Revision != rec.Revision {
		t.Fatalf("after rotate: %+v %v (want rev %d)", got, err, rec.Revision)
	}
}
