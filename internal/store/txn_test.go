package store

import (
	"context"
	"errors"
	"testing"

	"github.com/berth-project/berth/api"
)

func TestTxnUnchangedSince(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := context.Background()
	if err := s.Services.Create(ctx, svc("a")); err != nil {
		t.Fatal(err)
	}
	_, rev, err := s.Services.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string) error {
		txn := s.Txn()
		s.Services.TxnCreate(txn, svc(name))
		s.Services.TxnUnchangedSince(txn, rev)
		return txn.Commit(ctx)
	}
	// Writes elsewhere and deletions do not fail the guard.
	if err := s.Nodes.Create(ctx, &api.Node{ID: "n1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Services.Delete(ctx, "a", 0); err != nil {
		t.Fatal(err)
	}
	if err := write("b"); err != nil {
		t.Fatalf("guarded write after unrelated changes: %v", err)
	}
	// A service written since the list fails it, and nothing is written.
	if err := write("c"); !errors.Is(err, ErrConflict) {
		t.Fatalf("guarded write after a service changed: %v, want ErrConflict", err)
	}
	if _, err := s.Services.Get(ctx, "c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a failed guard wrote: %v", err)
	}
}

func TestTxnDeletePrefix(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := context.Background()
	for _, v := range []api.ServiceVersion{{Service: "web", Version: 1}, {Service: "web", Version: 2}, {Service: "web2", Version: 1}} {
		if err := s.Versions.Create(ctx, &v); err != nil {
			t.Fatal(err)
		}
	}
	txn := s.Txn()
	s.Versions.TxnDeletePrefix(txn, VersionPrefix("web"))
	if err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	all, _, err := s.Versions.List(ctx)
	if err != nil || len(all) != 1 || all[0].Service != "web2" {
		t.Fatalf("left %+v %v, want only web2's version", all, err)
	}
	txn = s.Txn()
	s.Versions.TxnDeletePrefix(txn, "")
	if err := txn.Commit(ctx); err == nil {
		t.Fatal("deleting a whole collection was not refused")
	}
}
