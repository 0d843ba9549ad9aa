package manager

import (
	"context"
	"crypto/x509"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/store"
)

func TestClusterCASeedsThenAdopts(t *testing.T) {
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
