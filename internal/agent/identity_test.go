package agent_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/agent"
	"github.com/berth-project/berth/internal/apiserver"
	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
)

const identityTestToken = "berth_identity_test_admin_token_0123"

// joinCluster is a real API server behind TLS the way a manager serves it
// (cluster CA chain, node certificates verified if given).
type joinCluster struct {
	st  *store.Store
	ca  *pki.CA
	srv *httptest.Server
}

func newJoinCluster(t *testing.T, ca *pki.CA, st *store.Store) *joinCluster {
	t.Helper()
	testutil.SkipIfShort(t, "embedded etcd")
	if st == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var err error
		st, err = store.Open(ctx, store.Config{DataDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
	}
	if ca == nil {
		var err error
		if ca, err = pki.LoadOrCreateCA(t.TempDir(), "cluster"); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	srv := httptest.NewUnstartedServer(apiserver.New(apiserver.Config{Store: st, Token: identityTestToken, CA: ca,
		NodeCertLifetime: time.Hour}).Handler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.WithCA(cert, ca)}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &joinCluster{st: st, ca: ca, srv: srv}
}

func (jc *joinCluster) workerToken(t *testing.T) string {
	t.Helper()
	c, err := api.NewClient(api.ClientConfig{Addr: jc.srv.URL, Token: identityTestToken, CACertPEM: jc.ca.CertPEM})
	if err != nil {
		t.Fatal(err)
	}
	toks, err := c.JoinTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return toks.Worker
}

func TestJoinStoresIdentityAndSpeaksMTLS(t *testing.T) {
	jc := newJoinCluster(t, nil, nil)
	dataDir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok := jc.workerToken(t)
	id, err := agent.Join(ctx, agent.JoinConfig{DataDir: dataDir, URL: jc.srv.URL, Token: tok, Hostname: "w1",
		Labels: map[string]string{"zone": "b"}})
	if err != nil {
		t.Fatal(err)
	}
	if id.Role() != pki.RoleWorker || !agent.HasIdentity(dataDir) {
		t.Fatalf("role %q, identity %v", id.Role(), agent.HasIdentity(dataDir))
	}
	fi, err := os.Stat(filepath.Join(agent.IdentityDir(dataDir), "node-key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dataDir, "agent", "node-id")); strings.TrimSpace(string(b)) != id.NodeID() {
		t.Fatalf("node-id file %q, want %s", b, id.NodeID())
	}
	// Nothing in the data dir holds the join token or the admin token.
	_ = filepath.Walk(dataDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), tok) || strings.Contains(string(b), identityTestToken) {
				t.Errorf("%s holds a token", p)
			}
		}
		return nil
	})
	if _, err := agent.Join(ctx, agent.JoinConfig{DataDir: dataDir, URL: jc.srv.URL, Token: tok}); !errors.Is(err, agent.ErrJoined) {
		t.Fatalf("second join: %v", err)
	}

	// A later start loads the same identity and works over mTLS only.
	again, err := agent.LoadIdentity(dataDir, nil)
	if err != nil || again.NodeID() != id.NodeID() || len(again.Managers()) == 0 {
		t.Fatalf("reload: %+v %v", again, err)
	}
	c, err := again.Client(nil)
	if err != nil {
		t.Fatal(err)
	}
	m := agent.APIManager{C: c, Identity: again}
	n, err := m.Register(ctx, api.NodeRegistration{NodeID: again.NodeID(), Hostname: "w1", Drivers: []string{"process"},
		Labels: map[string]string{"zone": "b"}})
	if err != nil || n.ID != id.NodeID() || n.Role != pki.RoleWorker || n.Status != api.NodeReady {
		t.Fatalf("register over mTLS: %+v %v", n, err)
	}
	if err := m.Report(ctx, again.NodeID(), api.StatusReport{}); err != nil {
		t.Fatal(err)
	}
	// The node certificate is no admin credential.
	var ae *api.Error
	if _, err := c.ListServices(ctx); !errors.As(err, &ae) || ae.Status != 403 {
		t.Fatalf("list services with a node certificate: %v", err)
	}
	// Renewal: a new certificate for the same node, kept on disk.
	old := again.Certificate().Leaf
	if err := again.Renew(ctx, c); err != nil {
		t.Fatal(err)
	}
	renewed := again.Certificate().Leaf
	if renewed.SerialNumber.Cmp(old.SerialNumber) == 0 || renewed.Subject.CommonName != id.NodeID() {
		t.Fatal("renew did not replace the certificate")
	}
	third, _ := agent.LoadIdentity(dataDir, nil)
	if third.Certificate().Leaf.SerialNumber.Cmp(renewed.SerialNumber) != 0 {
		t.Fatal("the renewed certificate was not saved")
	}
	if err := m.Report(ctx, again.NodeID(), api.StatusReport{}); err != nil {
		t.Fatalf("report with the renewed certificate: %v", err)
	}
}

func TestJoinRefusesAManagerWithTheWrongCA(t *testing.T) {
	real := newJoinCluster(t, nil, nil)
	tok := real.workerToken(t)
	// A man in the middle: a server with its own CA (sharing the store, so
	// it would even accept the token).
	mitm := newJoinCluster(t, nil, real.st)
	dataDir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := agent.Join(ctx, agent.JoinConfig{DataDir: dataDir, URL: mitm.srv.URL, Token: tok, Hostname: "w1"})
	want := "the manager at " + mitm.srv.URL + " presents CA " + mitm.ca.Digest() + ", the token expects " + real.ca.Digest()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("join through the wrong CA: %v\nwant it to say %q", err, want)
	}
	if agent.HasIdentity(dataDir) {
		t.Fatal("an identity was stored")
	}
	nodes, _, _ := real.st.Nodes.List(ctx)
	if len(nodes) != 0 {
		t.Fatalf("the refused join stored nodes: %v", nodes)
	}
	// A manager token is refused before anything is sent.
	toks, _ := func() (api.JoinTokens, error) {
		c, _ := api.NewClient(api.ClientConfig{Addr: real.srv.URL, Token: identityTestToken, CACertPEM: real.ca.CertPEM})
		return c.JoinTokens(ctx)
	}()
	if _, err := agent.Join(ctx, agent.JoinConfig{DataDir: dataDir, URL: real.srv.URL, Token: toks.Manager}); err == nil || !strings.Contains(err.Error(), "manager join token") {
		t.Fatalf("manager token: %v", err)
	}
	if _, err := agent.LoadIdentity(dataDir, nil); !errors.Is(err, agent.ErrNoIdentity) {
		t.Fatalf("LoadIdentity of an unjoined dir: %v", err)
	}
}
