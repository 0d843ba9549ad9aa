package apiserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
)

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (f *tlsFixture) managers(token string) []api.ClusterManager {
	f.t.Helper()
	code, b := f.do(f.client(nil), "GET", "/api/v1/cluster/managers", token, nil)
	if code != 200 {
		f.t.Fatalf("list managers: %d %s", code, b)
	}
	var out []api.ClusterManager
	if err := json.Unmarshal(b, &out); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func TestManagerJoinListRemove(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	t.Parallel()
	f := newTLSFixture(t, nil)
	ctx := context.Background()
	toks := f.tokens()
	_, csrPEM, err := pki.NewNodeKey("m2")
	if err != nil {
		t.Fatal(err)
	}
	port := freeLoopbackPort(t)
	peer := "http://127.0.0.1:" + strconv.Itoa(port)
	// m2's API: `manager ls` probes each manager's /healthz (issue 12).
	var m2Status atomic.Int32
	m2Status.Store(200)
	m2API := f.fakeManagerAPI(func() int { return int(m2Status.Load()) })
	req := api.ManagerJoinRequest{Token: toks.Manager, CSRPEM: string(csrPEM), Name: "m2", PeerURL: peer, APIURL: m2API.URL}

	// Refusals first: each leaves the store and the members as they were.
	before := f.snapshot()
	bad := []struct {
		name string
		mut  func(*api.ManagerJoinRequest)
		code int
		want string
	}{
		{"worker token", func(r *api.ManagerJoinRequest) { r.Token = toks.Worker }, 403, "worker join token cannot join a manager"},
		{"wrong token", func(r *api.ManagerJoinRequest) { r.Token = toks.Manager[:len(toks.Manager)-4] + "abcd" }, 401, "invalid join token"},
		{"garbage token", func(r *api.ManagerJoinRequest) { r.Token = "nope" }, 401, "invalid join token"},
		{"bad name", func(r *api.ManagerJoinRequest) { r.Name = "a/b" }, 400, "not a valid manager id"},
		{"bad api url", func(r *api.ManagerJoinRequest) { r.APIURL = "http://x:1" }, 400, "api_url"},
		{"bad csr", func(r *api.ManagerJoinRequest) { r.CSRPEM = "x" }, 400, "csr"},
	}
	for _, tc := range bad {
		r := req
		tc.mut(&r)
		code, b := f.do(f.client(nil), "POST", "/api/v1/cluster/managers/join", "", r)
		if code != tc.code || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %d %s, want %d with %q", tc.name, code, b, tc.code, tc.want)
		}
		if strings.Contains(string(b), toks.Manager) || strings.Contains(string(b), toks.Worker) {
			t.Errorf("%s: the answer repeats a token", tc.name)
		}
	}
	if f.snapshot() != before {
		t.Fatal("a refused manager join changed the store")
	}
	if m, _ := f.st.Members(ctx); len(m) != 1 {
		t.Fatalf("a refused join added a member: %+v", m)
	}
	if !strings.Contains(f.logs.String(), "refused a worker token on the manager join") {
		t.Error("the worker token on the manager join was not logged")
	}
	if strings.Contains(f.logs.String(), toks.Manager) || strings.Contains(f.logs.String(), toks.Worker) {
		t.Error("a token was logged")
	}

	// The manager token admits it.
	code, b := f.do(f.client(nil), "POST", "/api/v1/cluster/managers/join", "", req)
	if code != 200 {
		t.Fatalf("join: %d %s", code, b)
	}
	var resp api.ManagerJoinResponse
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.AdminToken != testToken || resp.CACertPEM != string(f.ca.CertPEM) || resp.MemberName != "m2" {
		t.Fatalf("response: %v (token ok %v)", resp, resp.AdminToken == testToken)
	}
	if _, err := pki.ParseCA([]byte(resp.CACertPEM), []byte(resp.CAKeyPEM), ""); err != nil {
		t.Fatalf("CA in the response: %v", err)
	}
	id, role, _, err := pki.VerifyNode(f.ca.Cert, []byte(resp.CertPEM), time.Now())
	if err != nil || id != "m2" || role != pki.RoleManager {
		t.Fatalf("manager certificate: %s %s %v", id, role, err)
	}
	if !strings.Contains(resp.InitialCluster, "m2="+peer) || strings.Count(resp.InitialCluster, "=") != 2 {
		t.Fatalf("initial cluster %q", resp.InitialCluster)
	}

	// Start the new member as the joining manager would.
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	m2, err := store.Open(sctx, store.Config{DataDir: t.TempDir(), Peer: &store.PeerConfig{Name: "m2", Port: port, InitialCluster: resp.InitialCluster}})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	go m2.KeepManagerRecord(sctx, store.ManagerRecord{ID: "m2", MemberName: "m2", MemberID: m2.MemberID(), APIURL: req.APIURL, PeerURL: peer, Started: time.Now()}, store.ManagerTTL)

	// A second join with the same name is refused.
	if code, b := f.do(f.client(nil), "POST", "/api/v1/cluster/managers/join", "", req); code != 409 {
		t.Fatalf("second join of m2: %d %s", code, b)
	}

	// The list shows m2 ready, the fixture's own member down (it runs no
	// manager record), and a node certificate may read it too.
	var ms []api.ClusterManager
	deadline := time.Now().Add(10 * time.Second)
	for {
		ms = f.managers(testToken)
		if len(ms) == 2 && ms[0].ID == "berth" && ms[0].Status == api.ManagerDown && ms[1].ID == "m2" && ms[1].Status == api.ManagerReady {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("managers: %+v", ms)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A manager whose record is live but that does not answer (killed: its
	// lease outlives it) is unreachable at once, not ready.
	m2Status.Store(503)
	if ms := f.managers(testToken); len(ms) != 2 || ms[1].Status != api.ManagerUnreachable {
		t.Fatalf("managers with m2 not answering: %+v", ms)
	}
	m2Status.Store(200)
	node := f.mustJoin("w1")
	code, b = f.do(f.client(&node.cert), "GET", "/api/v1/cluster/managers", "", nil)
	if code != 200 || !strings.Contains(string(b), "m2") {
		t.Fatalf("node certificate listing managers: %d %s", code, b)
	}
	// ...but not remove one.
	code, _ = f.do(f.client(&node.cert), "DELETE", "/api/v1/cluster/managers/m2", "", nil)
	if code != 403 {
		t.Fatalf("node certificate removing a manager: %d", code)
	}

	// Removal: unknown, self, below quorum without --force, then forced.
	if code, b := f.do(f.client(nil), "DELETE", "/api/v1/cluster/managers/nope", testToken, nil); code != 404 {
		t.Fatalf("remove unknown: %d %s", code, b)
	}
	if code, b := f.do(f.client(nil), "DELETE", "/api/v1/cluster/managers/berth", testToken, nil); code != 409 || !strings.Contains(string(b), "cannot remove itself") {
		t.Fatalf("remove self: %d %s", code, b)
	}
	// With m2 gone only this member is left, and it runs no manager (no
	// record): a quorum of one needs one running manager.
	if code, b := f.do(f.client(nil), "DELETE", "/api/v1/cluster/managers/m2", testToken, nil); code != 409 || !strings.Contains(string(b), "quorum") {
		t.Fatalf("remove below quorum: %d %s", code, b)
	}
	if m, _ := f.st.Members(ctx); len(m) != 2 {
		t.Fatalf("a refused removal changed the members: %+v", m)
	}
	req2, _ := http.NewRequest("DELETE", f.srv.URL+"/api/v1/cluster/managers/m2?force=true", nil)
	req2.Header.Set("Authorization", "Bearer "+testToken)
	resp2, err := f.client(nil).Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != 204 || !strings.Contains(resp2.Header.Get("Warning"), "survives the loss of no manager") {
		t.Fatalf("forced remove: %d, Warning %q", resp2.StatusCode, resp2.Header.Get("Warning"))
	}
	if m, _ := f.st.Members(ctx); len(m) != 1 {
		t.Fatalf("members after removal: %+v", m)
	}
	if ms := f.managers(testToken); len(ms) != 1 || ms[0].ID != "berth" {
		t.Fatalf("managers after removal: %+v", ms)
	}
	// The last manager: no "ask another manager" when there is none.
	code, b = f.do(f.client(nil), "DELETE", "/api/v1/cluster/managers/berth", testToken, nil)
	if code != 409 || !strings.Contains(string(b), "only manager") || strings.Contains(string(b), "another manager") {
		t.Fatalf("remove the last manager: %d %s", code, b)
	}
}

func TestQuorumWarning(t *testing.T) {
	for left, warn := range map[int]bool{1: true, 2: true, 3: false, 4: false, 5: false} {
		if got := quorumWarning(left); (got != "") != warn {
			t.Errorf("%d managers left: warning %q, want one: %v", left, got, warn)
		}
	}
}

// /healthz is ok only while the manager can serve: not once it was removed
// from the cluster (its own check fails).
func TestHealthzReportsAFailedManager(t *testing.T) {
	var failed atomic.Bool
	f := newTLSFixture(t, func(c *Config) {
		c.Health = func() error {
			if failed.Load() {
				return errors.New("manager: this manager's etcd member stopped")
			}
			return nil
		}
	})
	if code, b := f.do(f.client(nil), "GET", "/healthz", "", nil); code != 200 || string(b) != "ok\n" {
		t.Fatalf("healthy: %d %s", code, b)
	}
	failed.Store(true)
	if code, b := f.do(f.client(nil), "GET", "/healthz", "", nil); code != 503 || !strings.Contains(string(b), "etcd member stopped") {
		t.Fatalf("removed: %d %s", code, b)
	}
	f.st.Close() // the store gone: unhealthy too, whatever the manager says
	failed.Store(false)
	if code, b := f.do(f.client(nil), "GET", "/healthz", "", nil); code != 503 || !strings.Contains(string(b), "store") {
		t.Fatalf("store closed: %d %s", code, b)
	}
}

func TestPeerSchemeMatches(t *testing.T) {
	for _, c := range []struct {
		own, joining string
		ok           bool
	}{
		{"https://10.0.0.1:7444", "https://10.0.0.2:7444", true},
		{"https://10.0.0.1:7444", "http://10.0.0.2:7444", false},
		{"http://127.0.0.1:2380", "http://127.0.0.2:2380", true},
		{"", "http://10.0.0.2:7444", true},
	} {
		if err := peerSchemeMatches(c.own, c.joining); (err == nil) != c.ok {
			t.Errorf("own %s, joining %s: %v, want ok %v", c.own, c.joining, err, c.ok)
		}
	}
}

// fakeManagerAPI serves /healthz with the status status returns, behind a
// certificate of the fixture's cluster CA, as another manager would.
func (f *tlsFixture) fakeManagerAPI(status func() int) *httptest.Server {
	f.t.Helper()
	cert, err := f.ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		f.t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status())
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	f.t.Cleanup(srv.Close)
	return srv
}
