package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/testutil"
)

// TestEmbeddedEtcdRefusesNodeCertificates checks that a certificate the
// cluster CA signed for a node (as POST /join issues it) opens neither the
// member's client port nor its peer port: only the members' own
// certificate does. The store holds the CA key and the admin token.
func TestEmbeddedEtcdRefusesNodeCertificates(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	if pki.MemberCN != MemberCN {
		t.Fatalf("pki.MemberCN %q and store.MemberCN %q differ", pki.MemberCN, MemberCN)
	}
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "pki"), "test")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.MemberCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Open(ctx, Config{DataDir: dir, TLS: &TLSFiles{CertFile: cert, KeyFile: key, CAFile: ca.CAFilePath()},
		Peer: &PeerConfig{AdvertiseHost: "127.0.0.1", ListenHost: "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.AdminToken(ctx, "berth_secret"); err != nil {
		t.Fatalf("the member's own certificate: %v", err)
	}

	nodeKey, csr, err := pki.NewNodeKey("worker")
	if err != nil {
		t.Fatal(err)
	}
	nodeCert, err := ca.SignNode(csr, "node123", pki.RoleWorker, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	wd := t.TempDir()
	if err := os.WriteFile(filepath.Join(wd, "c.pem"), nodeCert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wd, "k.pem"), nodeKey, 0o600); err != nil {
		t.Fatal(err)
	}
	tc, err := (transport.TLSInfo{CertFile: filepath.Join(wd, "c.pem"), KeyFile: filepath.Join(wd, "k.pem"),
		TrustedCAFile: ca.CAFilePath()}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	wc, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + s.etcd.Clients[0].Addr().String()},
		TLS: tc, DialTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
	if resp, err := wc.Get(gctx, s.prefix+adminTokenKey); err == nil {
		t.Errorf("a node certificate read the store through the client port: %d keys", len(resp.Kvs))
	}
	gcancel()

	pair, err := tls.X509KeyPair(nodeCert, nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	hc := &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	if resp, err := hc.Get(s.PeerURL() + "/members"); err == nil {
		resp.Body.Close()
		t.Errorf("a node certificate reached the peer port: %s", resp.Status)
	}
}
