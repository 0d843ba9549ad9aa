package manager

import (
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
)

func TestClusterCASeedsThenAdopts(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	hosts := []string{"127.0.0.1"}

	// The first manager seeds the store with its own CA and keeps it.
	first, _ := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "pki"), "first")
	cert1, _ := first.ServerCertificate(hosts)
	ca, cert, err := clusterCA(ctx, st, first, cert1, hosts, log)
	if err != nil || ca != first || &cert.Certificate[0][0] != &cert1.Certificate[0][0] {
		t.Fatalf("first manager: CA kept %v, err %v", ca == first, err)
	}
	// A manager with another CA on disk adopts the cluster's, on disk too,
	// and its API certificate chains to it.
	dir := filepath.Join(t.TempDir(), "pki")
	second, _ := pki.LoadOrCreateCA(dir, "second")
	cert2, _ := second.ServerCertificate(hosts)
	ca, cert, err = clusterCA(ctx, st, second, cert2, hosts, log)
	if err != nil || ca.Digest() != first.Digest() {
		t.Fatalf("second manager: %v, CA %s want %s", err, ca.Digest(), first.Digest())
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	if err := leaf.CheckSignatureFrom(first.Cert); err != nil {
		t.Fatalf("API certificate not from the cluster CA: %v", err)
	}
	again, err := pki.LoadOrCreateCA(dir, "x")
	if err != nil || again.Digest() != first.Digest() {
		t.Fatalf("the adopted CA was not saved: %v", err)
	}
}

// TestClusterAdminTokenSeedsThenAdopts checks that managers sharing a store
// accept one admin token: the first one's, which a second manager (another
// token in its data directory, as when two managers point at one external
// etcd) adopts and writes to its own token file.
func TestClusterAdminTokenSeedsThenAdopts(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	f1, f2 := filepath.Join(t.TempDir(), TokenFile), filepath.Join(t.TempDir(), TokenFile)
	t1, err := pki.LoadOrCreateToken(f1)
	if err != nil {
		t.Fatal(err)
	}
	t2, err := pki.LoadOrCreateToken(f2)
	if err != nil || t1 == t2 {
		t.Fatalf("two fresh tokens: %v (equal: %v)", err, t1 == t2)
	}
	got, err := clusterAdminToken(ctx, st, t1, f1, log)
	if err != nil || got != t1 {
		t.Fatalf("first manager: %v; kept its token: %v", err, got == t1)
	}
	got, err = clusterAdminToken(ctx, st, t2, f2, log)
	if err != nil || got != t1 {
		t.Fatalf("second manager: %v; adopted the cluster's token: %v", err, got == t1)
	}
	if again, err := pki.LoadOrCreateToken(f2); err != nil || again != t1 {
		t.Fatalf("the adopted token was not written to the second manager's file: %v", err)
	}
	if fi, err := os.Stat(f2); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode: %v %v", fi.Mode(), err)
	}
}
