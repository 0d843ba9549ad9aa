package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/store"
)

// managerRoutes adds the routes of the manager list and of manager
// membership (issue #3, HA managers).
func (s *Server) managerRoutes(handle func(string, http.Handler)) {
	// A joining manager has no credentials but its join token, which it
	// sends in the body: the route is public and rate-limited.
	handle("POST /api/v1/cluster/managers/join", s.public(s.joinManager))
	handle("GET /api/v1/cluster/managers", s.authorized(nodeAccess, s.listManagers))
	handle("DELETE /api/v1/cluster/managers/{id}", s.authorized(adminOnly, s.removeManager))
}

// maxManagerJoinBytes bounds a manager join request.
const maxManagerJoinBytes = 16 << 10

// memberAddTimeout bounds how long a join waits for etcd to accept a new
// member (it refuses one until every member has been up for 5 s).
const memberAddTimeout = 20 * time.Second

// joinManager admits a manager: it proves the manager token, signs the
// manager's CSR, and adds its etcd member, in that order, so that a refused
// request changes nothing. It shares /join's rate limit.
func (s *Server) joinManager(w http.ResponseWriter, r *http.Request) error {
	if err := s.needCA(); err != nil {
		return err
	}
	if !s.joinLimit.allow(remoteHost(r), s.now()) {
		s.log.Warn("manager join rate limit hit", "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", "1")
		return &api.Error{Code: api.CodeRateLimited, Status: http.StatusTooManyRequests,
			Message: "too many join attempts from this address; wait and try again"}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxManagerJoinBytes)
	var req api.ManagerJoinRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	role, err := s.VerifyJoinToken(r.Context(), req.Token)
	if err != nil {
		if !errors.Is(err, ErrBadJoinToken) {
			return err
		}
		s.log.Warn("refused a manager join", "remote", r.RemoteAddr, "name", req.Name, "err", err)
		return &api.Error{Code: api.CodeUnauthorized, Status: http.StatusUnauthorized, Field: "token",
			Message: strings.TrimPrefix(err.Error(), "apiserver: ")}
	}
	if role != pki.RoleManager {
		s.log.Warn("refused a worker token on the manager join", "remote", r.RemoteAddr, "name", req.Name)
		return &api.Error{Code: api.CodeForbidden, Status: http.StatusForbidden, Field: "token",
			Message: "a worker join token cannot join a manager: use the manager token (`berth join-token manager`), or join this machine as a worker with `berth agent --join`"}
	}
	if err := checkManagerJoin(req); err != nil {
		return err
	}
	// A member of a cluster whose members speak TLS on their peer port
	// (the embedded one always does) never serves plain http: such a URL
	// would add a member that cannot start, and a two-member cluster that
	// cannot write.
	if err := peerSchemeMatches(s.st.PeerURL(), req.PeerURL); err != nil {
		return err
	}
	ca := s.cfg.CA
	caKey, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	certPEM, err := ca.SignNode([]byte(req.CSRPEM), req.Name, pki.RoleManager, s.now(), 0)
	if err != nil {
		return invalid("csr_pem", "%s", err.Error())
	}
	before, err := s.managers(r.Context())
	if err != nil {
		return err
	}
	for _, m := range before {
		if m.ID == req.Name {
			return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
				Message: "a manager named " + req.Name + " is already in the cluster (remove it first with `berth manager rm " + req.Name + "`)"}
		}
	}
	resp := api.ManagerJoinResponse{CACertPEM: string(ca.CertPEM), CAKeyPEM: string(caKey), CertPEM: string(certPEM),
		AdminToken: s.cfg.Token, Managers: before}
	if s.st.Embedded() {
		ctx, cancel := context.WithTimeout(r.Context(), memberAddTimeout)
		defer cancel()
		initial, id, err := s.st.AddMember(ctx, req.Name, req.PeerURL)
		if errors.Is(err, store.ErrExists) {
			return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict, Message: err.Error()}
		}
		if err != nil {
			return &api.Error{Code: api.CodeUnavailable, Status: http.StatusServiceUnavailable,
				Message: "etcd did not take the new member: " + err.Error()}
		}
		resp.InitialCluster, resp.MemberName, resp.MemberID = initial, req.Name, strconv.FormatUint(id, 16)
	}
	s.log.Info("manager joined", "name", req.Name, "api", req.APIURL, "peer", req.PeerURL, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// checkManagerJoin validates the parts of a join request the token does not
// cover.
func checkManagerJoin(req api.ManagerJoinRequest) error {
	if !pki.ValidNodeID(req.Name) {
		return invalid("name", "%q is not a valid manager id (letters, digits, - and _; at most 128)", req.Name)
	}
	if err := checkURL(req.APIURL, "https"); err != nil {
		return invalid("api_url", "%s", err.Error())
	}
	if req.PeerURL != "" {
		if err := checkURL(req.PeerURL, "https", "http"); err != nil {
			return invalid("peer_url", "%s", err.Error())
		}
	}
	if req.CSRPEM == "" {
		return invalid("csr_pem", "a CSR for the manager's key is required")
	}
	return nil
}

func checkURL(raw string, schemes ...string) error {
	u, err := url.Parse(raw)
	if err != nil || !slices.Contains(schemes, u.Scheme) || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return fmt.Errorf("%q: want %s://host:port", raw, schemes[0])
	}
	return nil
}

func (s *Server) listManagers(w http.ResponseWriter, r *http.Request) error {
	ms, err := s.managers(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ms)
	return nil
}

// managers merges the live managers' records with the etcd members: a
// member without a record is a manager that is down (or not yet started).
func (s *Server) managers(ctx context.Context) ([]api.ClusterManager, error) {
	recs, err := s.st.ManagerRecords(ctx)
	if err != nil {
		return nil, err
	}
	leader, err := s.st.LeaderID(ctx)
	if err != nil {
		return nil, err
	}
	var members []store.Member
	if s.st.Embedded() {
		if members, err = s.st.Members(ctx); err != nil {
			return nil, err
		}
	}
	out := make([]api.ClusterManager, 0, max(len(recs), len(members)))
	seen := map[uint64]bool{}
	for _, rec := range recs {
		m := api.ClusterManager{ID: rec.ID, APIURL: rec.APIURL, PeerURL: rec.PeerURL, Leader: rec.ID == leader,
			Status: api.ManagerReady, Started: rec.Started}
		if rec.MemberID != 0 {
			m.MemberID = strconv.FormatUint(rec.MemberID, 16)
			seen[rec.MemberID] = true
		}
		out = append(out, m)
	}
	for _, mem := range members {
		if seen[mem.ID] {
			continue
		}
		m := api.ClusterManager{ID: mem.Name, MemberID: strconv.FormatUint(mem.ID, 16), Status: api.ManagerDown}
		if len(mem.PeerURLs) > 0 {
			m.PeerURL = mem.PeerURLs[0]
		}
		if !mem.Started() {
			m.ID, m.Status = m.MemberID, api.ManagerJoining
		}
		out = append(out, m)
	}
	s.probeManagers(ctx, out)
	slices.SortFunc(out, func(a, b api.ClusterManager) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out, nil
}

// managerProbeTimeout bounds the probe of each manager's /healthz.
const managerProbeTimeout = 1500 * time.Millisecond

// probeManagers asks each manager that has a live record whether it
// serves (GET /healthz, trusting the cluster CA only). A record outlives a
// killed manager for its lease (and etcd extends leases when its own leader
// changes: ~11 s were seen), so a manager that does not answer is shown
// unreachable at once instead of ready.
func (s *Server) probeManagers(ctx context.Context, ms []api.ClusterManager) {
	if s.cfg.CA == nil {
		return
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.cfg.CA.Cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Proxy: nil,
		DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: managerProbeTimeout}
	var wg sync.WaitGroup
	for i := range ms {
		m := &ms[i]
		if m.Status != api.ManagerReady || m.APIURL == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, managerProbeTimeout)
			defer cancel()
			req, err := http.NewRequestWithContext(pctx, http.MethodGet, strings.TrimSuffix(m.APIURL, "/")+"/healthz", nil)
			if err != nil {
				return
			}
			resp, err := hc.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return
				}
				err = fmt.Errorf("GET /healthz: %s", resp.Status)
			}
			// Its leadership key may outlive it as its record does; a
			// manager that does not answer runs no controllers.
			m.Status, m.Leader = api.ManagerUnreachable, false
			s.log.Debug("a manager with a live record does not answer", "id", m.ID, "api", m.APIURL, "err", err)
		}()
	}
	wg.Wait()
}

func (s *Server) removeManager(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	force := r.URL.Query().Get("force") == "true"
	if !s.st.Embedded() {
		return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
			Message: "this cluster's etcd is external: stop the manager; its record expires by itself (etcd's members are changed with etcdctl)"}
	}
	ms, err := s.managers(r.Context())
	if err != nil {
		return err
	}
	i := slices.IndexFunc(ms, func(m api.ClusterManager) bool { return m.ID == id || (m.MemberID != "" && m.MemberID == id) })
	if i < 0 {
		return notFound("no manager %q (see `berth manager ls`)", id)
	}
	target := ms[i]
	mid, err := strconv.ParseUint(target.MemberID, 16, 64)
	if err != nil || target.MemberID == "" {
		return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict, Message: "manager " + id + " has no etcd member to remove"}
	}
	if len(ms) == 1 {
		return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
			Message: "manager " + id + " is the cluster's only manager: removing it would leave no cluster. To retire the cluster, stop `berth server` and remove its data directory"}
	}
	if mid == s.st.MemberID() {
		other := "https://OTHER:7443"
		for _, m := range ms {
			if m.ID != target.ID && m.APIURL != "" && m.Status == api.ManagerReady {
				other = m.APIURL
				break
			}
		}
		return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
			Message: "a manager cannot remove itself: ask another manager (berth --addr " + other + " manager rm " + id + ")"}
	}
	// After the removal the cluster has len-1 members; it keeps a quorum
	// only if enough of the rest run.
	running := 0
	for _, m := range ms {
		if m.ID != target.ID && m.Status == api.ManagerReady {
			running++
		}
	}
	if quorum := (len(ms)-1)/2 + 1; running < quorum && !force {
		return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
			Message: fmt.Sprintf("removing manager %s would leave %d running of the %d managers left, fewer than the %d a quorum needs; bring managers back first, or use --force", id, running, len(ms)-1, quorum)}
	}
	ctx, cancel := context.WithTimeout(r.Context(), memberAddTimeout)
	defer cancel()
	if err := s.st.RemoveMember(ctx, mid); errors.Is(err, store.ErrMemberNotFound) {
		return notFound("%s", err.Error())
	} else if err != nil {
		return &api.Error{Code: api.CodeUnavailable, Status: http.StatusServiceUnavailable, Message: err.Error()}
	}
	if err := s.st.DeleteManagerRecord(ctx, target.ID); err != nil {
		s.log.Warn("could not delete a removed manager's record; it expires by itself", "id", target.ID, "err", err)
	}
	s.log.Info("manager removed", "id", target.ID, "member", target.MemberID, "force", force)
	if msg := quorumWarning(len(ms) - 1); msg != "" {
		s.log.Warn("manager removal leaves no fault tolerance", "left", len(ms)-1)
		w.Header().Add("Warning", warningHeader(msg))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// quorumWarning warns when a cluster of left managers survives the loss of
// none of them ("" when it survives at least one).
func quorumWarning(left int) string {
	if tolerated := (left - 1) / 2; tolerated > 0 {
		return ""
	}
	if left == 1 {
		return "one manager is left: the cluster now survives the loss of no manager (its loss, or of its data, loses the cluster); add managers with `berth join-token manager`"
	}
	return fmt.Sprintf("%d managers are left: the cluster now survives the loss of no manager (a quorum needs %d of %d); run 3 or 5, adding managers with `berth join-token manager`", left, left/2+1, left)
}

// peerSchemeMatches refuses a joining member's plain-http peer URL when this
// member's peer URL is https: a member that speaks TLS never serves http.
func peerSchemeMatches(own, joining string) error {
	if strings.HasPrefix(own, "https://") && strings.HasPrefix(joining, "http://") {
		return invalid("peer_url", "%q: the cluster's members speak TLS; use https", joining)
	}
	return nil
}
