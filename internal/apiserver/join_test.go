package apiserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
)

// tlsFixture is an API server behind TLS as the manager serves it: the
// cluster CA's server certificate, client certificates verified if given.
type tlsFixture struct {
	t    *testing.T
	st   *store.Store
	ca   *pki.CA
	srv  *httptest.Server
	pool *x509.CertPool
	logs *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTLSFixture(t *testing.T, tweak func(*Config)) *tlsFixture {
	t.Helper()
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := pki.LoadOrCreateCA(t.TempDir(), "test cluster CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg := Config{Store: st, Token: testToken, Version: "test", CA: ca,
		Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if tweak != nil {
		tweak(&cfg)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	srv := httptest.NewUnstartedServer(New(cfg).Handler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool,
		MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &tlsFixture{t: t, st: st, ca: ca, srv: srv, pool: pool, logs: logs}
}

// client returns an HTTP client trusting the cluster CA that presents
// cert, if not nil.
func (f *tlsFixture) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: f.pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
}

func (f *tlsFixture) do(hc *http.Client, method, path, token string, body any) (int, []byte) {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (f *tlsFixture) tokens() api.JoinTokens {
	f.t.Helper()
	code, b := f.do(f.client(nil), "GET", "/api/v1/cluster/join-tokens", testToken, nil)
	if code != 200 {
		f.t.Fatalf("join-tokens: %d %s", code, b)
	}
	var out api.JoinTokens
	if err := json.Unmarshal(b, &out); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// joined is a node that joined: its id and mTLS certificate.
type joined struct {
	id   string
	cert tls.Certificate
	resp api.JoinResponse
}

func (f *tlsFixture) join(token, hostname string, labels map[string]string) (int, []byte, *joined) {
	f.t.Helper()
	keyPEM, csrPEM, err := pki.NewNodeKey(hostname)
	if err != nil {
		f.t.Fatal(err)
	}
	code, b := f.do(f.client(nil), "POST", "/api/v1/join", "",
		api.JoinRequest{Token: token, CSRPEM: string(csrPEM), Hostname: hostname, Address: "10.0.0.9", Labels: labels})
	if code != 200 {
		return code, b, nil
	}
	var resp api.JoinResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		f.t.Fatal(err)
	}
	cert, err := tls.X509KeyPair([]byte(resp.CertPEM), keyPEM)
	if err != nil {
		f.t.Fatal(err)
	}
	return code, b, &joined{id: resp.NodeID, cert: cert, resp: resp}
}

func (f *tlsFixture) mustJoin(hostname string) *joined {
	f.t.Helper()
	code, b, j := f.join(f.tokens().Worker, hostname, nil)
	if code != 200 {
		f.t.Fatalf("join: %d %s", code, b)
	}
	return j
}

func (f *tlsFixture) snapshot() string {
	resp, err := f.st.Client().Get(context.Background(), f.st.Prefix(), clientv3WithPrefix())
	if err != nil {
		f.t.Fatal(err)
	}
	var b strings.Builder
	for _, kv := range resp.Kvs {
		b.WriteString(string(kv.Key) + "=" + string(kv.Value) + "\n")
	}
	return b.String()
}

func TestJoinIssuesNodeCertificateAndNode(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t, nil)
	toks := f.tokens()
	for role, tok := range map[string]string{pki.RoleWorker: toks.Worker, pki.RoleManager: toks.Manager} {
		p, err := pki.ParseJoinToken(tok)
		if err != nil || p.Role != role || p.CADigest != f.ca.Digest() {
			t.Fatalf("%s token %+v %v", role, p, err)
		}
	}
	// The tokens are stable until rotated.
	if again := f.tokens(); again != toks {
		t.Fatal("join tokens changed without a rotation")
	}
	code, b, j := f.join(toks.Worker, "worker-1", map[string]string{"zone": "a"})
	if code != 200 {
		t.Fatalf("join: %d %s", code, b)
	}
	id, role, _, err := pki.VerifyNode(f.ca.Cert, []byte(j.resp.CertPEM), time.Now())
	if err != nil || id != j.id || role != pki.RoleWorker {
		t.Fatalf("certificate names %q %q (%v), want %s worker", id, role, err, j.id)
	}
	if j.resp.CAPEM != string(f.ca.CertPEM) || len(j.resp.Managers) != 1 || !strings.HasPrefix(j.resp.Managers[0], "https://127.0.0.1:") {
		t.Fatalf("response: CA match %v, managers %v", j.resp.CAPEM == string(f.ca.CertPEM), j.resp.Managers)
	}
	n, err := f.st.Nodes.Get(context.Background(), j.id)
	if err != nil {
		t.Fatal(err)
	}
	if n.Hostname != "worker-1" || n.Role != pki.RoleWorker || n.Labels["zone"] != "a" || n.Address != "10.0.0.9" ||
		n.Availability != api.AvailabilityActive || n.Status != api.NodeDown {
		t.Fatalf("stored node %+v", n)
	}
	// The node registers over mTLS with its own id and heartbeats.
	hc := f.client(&j.cert)
	reg := api.NodeRegistration{NodeID: j.id, Hostname: "worker-1", Drivers: []string{"process"}, Labels: map[string]string{"zone": "a"}}
	if code, b := f.do(hc, "POST", "/api/v1/nodes/register", "", reg); code != 200 {
		t.Fatalf("register with the node certificate: %d %s", code, b)
	}
	if code, b := f.do(hc, "POST", "/api/v1/nodes/"+j.id+"/status", "", api.StatusReport{}); code != 204 {
		t.Fatalf("status with the node certificate: %d %s", code, b)
	}
	if n, _ := f.st.Nodes.Get(context.Background(), j.id); n.Status != api.NodeReady || n.Role != pki.RoleWorker {
		t.Fatalf("after registration: %+v", n)
	}
	// The token never reaches the log.
	if strings.Contains(f.logs.String(), toks.Worker) || strings.Contains(f.logs.String(), p(toks.Worker).Secret) {
		t.Fatal("a join token was logged")
	}
}

func p(tok string) pki.JoinToken { t, _ := pki.ParseJoinToken(tok); return t }

func TestJoinRefusals(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t, nil)
	toks := f.tokens()
	otherCA, _ := pki.LoadOrCreateCA(t.TempDir(), "other")
	foreign, _ := pki.NewJoinToken(otherCA, pki.RoleWorker)
	guessed, _ := pki.NewJoinToken(f.ca, pki.RoleWorker) // right format and CA, not issued
	// Rotate the worker token: the old one is refused from now on.
	old := toks.Worker
	if code, b := f.do(f.client(nil), "POST", "/api/v1/cluster/join-tokens/worker/rotate", testToken, nil); code != 200 {
		t.Fatalf("rotate: %d %s", code, b)
	}
	before := f.snapshot()
	for _, tc := range []struct {
		name, token string
		code        int
		msg         string
	}{
		{"malformed", "berth_not_a_join_token", 401, "must start with BERTH-1-"},
		{"empty", "", 401, "invalid join token"},
		{"other cluster", foreign, 401, "another cluster"},
		{"never issued", guessed, 401, "not the cluster's current worker token"},
		{"rotated away", old, 401, "not the cluster's current worker token"},
		{"manager token", toks.Manager, 403, "berth server --join"},
	} {
		code, b, _ := f.join(tc.token, "evil", nil)
		if code != tc.code || !strings.Contains(string(b), tc.msg) {
			t.Errorf("%s: %d %s, want %d with %q", tc.name, code, b, tc.code, tc.msg)
		}
		if tc.token != "" && strings.Contains(string(b), tc.token) {
			t.Errorf("%s: the response repeats the token", tc.name)
		}
	}
	if after := f.snapshot(); after != before {
		t.Fatalf("a refused join changed the store:\nbefore %s\nafter %s", before, after)
	}
	// A bad CSR with a good token stores nothing either.
	cur := f.tokens().Worker
	code, b := f.do(f.client(nil), "POST", "/api/v1/join", "", api.JoinRequest{Token: cur, CSRPEM: "junk", Hostname: "h"})
	if code != 400 || !strings.Contains(string(b), "csr_pem") {
		t.Fatalf("bad CSR: %d %s", code, b)
	}
	big := api.JoinRequest{Token: cur, CSRPEM: strings.Repeat("A", api.MaxJoinRequestBytes), Hostname: "h"}
	if code, b := f.do(f.client(nil), "POST", "/api/v1/join", "", big); code != 413 {
		t.Fatalf("oversized join: %d %s", code, b)
	}
	if after := f.snapshot(); after != before {
		t.Fatal("a refused join changed the store")
	}
	if !strings.Contains(f.logs.String(), "refused a join") {
		t.Fatal("refused joins are not logged")
	}
	// The new token works.
	if code, b, _ := f.join(cur, "good", nil); code != 200 {
		t.Fatalf("join with the rotated-in token: %d %s", code, b)
	}
}

func TestNodeCertificateAuthorization(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t, nil)
	a, b := f.mustJoin("node-a"), f.mustJoin("node-b")
	hc := f.client(&a.cert)
	reg := func(id string) api.NodeRegistration {
		return api.NodeRegistration{NodeID: id, Hostname: "node-a", Drivers: []string{"process"}}
	}
	before := f.snapshot()
	for _, tc := range []struct {
		method, path string
		body         any
		msg          string
	}{
		{"GET", "/api/v1/services", nil, "needs the admin token"},
		{"PUT", "/api/v1/services/web", map[string]any{"name": "web"}, "needs the admin token"},
		{"DELETE", "/api/v1/services/web", nil, "needs the admin token"},
		{"GET", "/api/v1/nodes", nil, "needs the admin token"},
		{"GET", "/api/v1/cluster/join-tokens", nil, "needs the admin token"},
		{"POST", "/api/v1/cluster/join-tokens/worker/rotate", nil, "needs the admin token"},
		{"GET", "/api/v1/nodes/" + b.id + "/assignments", nil, "may only act for itself"},
		{"POST", "/api/v1/nodes/" + b.id + "/status", api.StatusReport{}, "may only act for itself"},
		{"POST", "/api/v1/nodes/register", reg(b.id), "the registration names node"},
		{"POST", "/api/v1/nodes/register", reg(""), "the registration names node (none)"},
	} {
		code, body := f.do(hc, tc.method, tc.path, "", tc.body)
		if code != 403 || !strings.Contains(string(body), tc.msg) {
			t.Errorf("%s %s with node A's certificate: %d %s, want 403 %q", tc.method, tc.path, code, body, tc.msg)
		}
	}
	if after := f.snapshot(); after != before {
		t.Fatalf("a refused request changed the store:\nbefore %s\nafter %s", before, after)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "refused a node certificate") || !strings.Contains(logs, "cn="+a.id) || !strings.Contains(logs, "remote=127.0.0.1") {
		t.Fatalf("refusals not logged with the CN and remote address:\n%s", logs)
	}
	// Its own endpoints work.
	if code, body := f.do(hc, "POST", "/api/v1/nodes/register", "", reg(a.id)); code != 200 {
		t.Fatalf("own registration: %d %s", code, body)
	}
	if code, body := f.do(hc, "GET", "/api/v1/gateway/ca", "", nil); code != 200 {
		t.Fatalf("gateway CA: %d %s", code, body)
	}
	// No credentials at all: 401. A wrong bearer token with a good
	// certificate: 401 too (the token decides).
	if code, _ := f.do(f.client(nil), "POST", "/api/v1/nodes/"+a.id+"/status", "", api.StatusReport{}); code != 401 {
		t.Fatalf("no credentials: %d", code)
	}
	if code, _ := f.do(hc, "POST", "/api/v1/nodes/"+a.id+"/status", "wrong-token-wrong-token", api.StatusReport{}); code != 401 {
		t.Fatalf("wrong token with a good certificate: %d", code)
	}
	// The admin token still does everything, for any node.
	if code, body := f.do(f.client(nil), "POST", "/api/v1/nodes/"+b.id+"/status", testToken, api.StatusReport{}); code != 204 {
		t.Fatalf("admin status for B: %d %s", code, body)
	}
	// A certificate of another CA does not even get through TLS.
	other, _ := pki.LoadOrCreateCA(t.TempDir(), "other")
	keyPEM, csrPEM, _ := pki.NewNodeKey("x")
	certPEM, _ := other.SignNode(csrPEM, a.id, pki.RoleWorker, time.Now(), 0)
	forged, _ := tls.X509KeyPair(certPEM, keyPEM)
	// Present it even though the server asks for the cluster CA's (a Go
	// client would otherwise send none).
	forgedClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &forged, nil }}}}
	req, _ := http.NewRequest("GET", f.srv.URL+"/api/v1/nodes/"+a.id+"/assignments", nil)
	if resp, err := forgedClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a certificate of another CA was accepted: %d", resp.StatusCode)
	}
}

func TestRenewAndRemovedNode(t *testing.T) {
	t.Parallel()
	var skew atomic.Int64 // added to the server's clock
	f := newTLSFixture(t, func(c *Config) {
		c.NodeCertLifetime = time.Hour
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	a := f.mustJoin("node-a")
	hc := f.client(&a.cert)
	keyPEM, csrPEM, _ := pki.NewNodeKey("node-a")
	code, b := f.do(hc, "POST", "/api/v1/agent/renew", "", api.RenewRequest{CSRPEM: string(csrPEM)})
	if code != 200 {
		t.Fatalf("renew: %d %s", code, b)
	}
	var rr api.RenewResponse
	_ = json.Unmarshal(b, &rr)
	id, role, cert, err := pki.VerifyNode(f.ca.Cert, []byte(rr.CertPEM), time.Now())
	if err != nil || id != a.id || role != pki.RoleWorker {
		t.Fatalf("renewed certificate: %q %q %v", id, role, err)
	}
	if d := time.Until(cert.NotAfter); d > time.Hour || d < 50*time.Minute {
		t.Fatalf("renewed lifetime %v, want the configured hour", d)
	}
	if _, err := tls.X509KeyPair([]byte(rr.CertPEM), keyPEM); err != nil {
		t.Fatal(err)
	}
	// The admin token cannot renew: there is no node to renew for.
	if code, _ := f.do(f.client(nil), "POST", "/api/v1/agent/renew", testToken, api.RenewRequest{CSRPEM: string(csrPEM)}); code != 400 {
		t.Fatalf("renew with the admin token: %d", code)
	}
	// A removed node can neither renew nor register again.
	n, err := f.st.Nodes.Get(context.Background(), a.id)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.Nodes.Delete(context.Background(), a.id, n.Revision); err != nil {
		t.Fatal(err)
	}
	skew.Store(int64(nodeCheckTTL)) // past the cache of known nodes
	before := f.snapshot()
	for _, path := range []string{"/api/v1/agent/certificates", "/api/v1/endpoints", "/api/v1/nodes/" + a.id + "/assignments"} {
		if code, b := f.do(hc, "GET", path, "", nil); code != 403 || !strings.Contains(string(b), "removed") {
			t.Fatalf("GET %s after removal: %d %s", path, code, b)
		}
	}
	if code, b := f.do(hc, "POST", "/api/v1/agent/renew", "", api.RenewRequest{CSRPEM: string(csrPEM)}); code != 403 || !strings.Contains(string(b), "removed") {
		t.Fatalf("renew after removal: %d %s", code, b)
	}
	reg := api.NodeRegistration{NodeID: a.id, Hostname: "node-a", Drivers: []string{"process"}}
	if code, b := f.do(hc, "POST", "/api/v1/nodes/register", "", reg); code != 403 || !strings.Contains(string(b), "join again") {
		t.Fatalf("register after removal: %d %s", code, b)
	}
	if f.snapshot() != before {
		t.Fatal("a removed node changed the store")
	}
}

func TestJoinRateLimit(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := newTLSFixture(t, func(c *Config) { c.JoinBurst, c.JoinEvery, c.Now = 2, time.Minute, clock })
	for i := range 2 {
		if code, b, _ := f.join("bad", fmt.Sprint("h", i), nil); code != 401 {
			t.Fatalf("attempt %d: %d %s", i, code, b)
		}
	}
	if code, b, _ := f.join("bad", "h3", nil); code != 429 || !strings.Contains(string(b), api.CodeRateLimited) {
		t.Fatalf("third attempt: %d %s, want 429", code, b)
	}
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	if code, b, _ := f.join("bad", "h4", nil); code != 401 {
		t.Fatalf("after a refill: %d %s", code, b)
	}
}

func TestRotateJoinToken(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t, nil)
	before := f.tokens()
	code, b := f.do(f.client(nil), "POST", "/api/v1/cluster/join-tokens/manager/rotate", testToken, nil)
	if code != 200 {
		t.Fatalf("rotate: %d %s", code, b)
	}
	var after api.JoinTokens
	_ = json.Unmarshal(b, &after)
	if after.Worker != before.Worker || after.Manager == before.Manager || f.tokens() != after {
		t.Fatal("rotating the manager token must change it and only it")
	}
	srv := New(Config{Store: f.st, Token: testToken, CA: f.ca})
	if role, err := srv.VerifyJoinToken(context.Background(), after.Manager); err != nil || role != pki.RoleManager {
		t.Fatalf("VerifyJoinToken(new manager token) = %q %v", role, err)
	}
	if _, err := srv.VerifyJoinToken(context.Background(), before.Manager); err == nil {
		t.Fatal("the rotated-away manager token still verifies")
	}
	if code, _ := f.do(f.client(nil), "POST", "/api/v1/cluster/join-tokens/admin/rotate", testToken, nil); code != 400 {
		t.Fatalf("rotate an unknown role: %d", code)
	}
}

// TestRemovedNodeCannotRegisterAgain checks that `berth node rm` holds even
// when the removed node's agent registers again at once (it does, on
// not_found), inside the window in which the manager trusts a node id it saw
// in the store: the certificate no longer creates the node, and every node
// route refuses it.
func TestRemovedNodeCannotRegisterAgain(t *testing.T) {
	f := newTLSFixture(t, nil)
	a := f.mustJoin("node-a")
	hc := f.client(&a.cert)
	reg := api.NodeRegistration{NodeID: a.id, Hostname: "node-a", Drivers: []string{"process"}}
	if code, b := f.do(hc, "POST", "/api/v1/nodes/register", "", reg); code != 200 {
		t.Fatalf("register: %d %s", code, b)
	}
	if code, b := f.do(f.client(nil), "DELETE", "/api/v1/nodes/"+a.id+"?force=true", testToken, nil); code != 204 {
		t.Fatalf("rm: %d %s", code, b)
	}
	if code, b := f.do(hc, "POST", "/api/v1/nodes/register", "", reg); code != 403 {
		t.Errorf("registration after rm: %d %s, want 403", code, b)
	}
	if _, err := f.st.Nodes.Get(context.Background(), a.id); err == nil {
		t.Error("the removed node is in the store again")
	}
	if code, _ := f.do(hc, "POST", "/api/v1/nodes/"+a.id+"/status", "", api.StatusReport{}); code != 403 && code != 401 && code != 404 {
		t.Errorf("status report after rm: %d, want refused", code)
	}
}
