package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
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
	if mid == s.st.MemberID() {
		return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict,
			Message: "a manager cannot remove itself: ask another manager (berth --addr https://OTHER:7443 manager rm " + id + ")"}
	}
	if len(ms) == 1 {
		return &api.Error{Code: api.CodeConflict, Status: http.StatusConflict, Message: "manager " + id + " is the last one"}
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
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// peerSchemeMatches refuses a joining member's plain-http peer URL when this
// member's peer URL is https: a member that speaks TLS never serves http.
func peerSchemeMatches(own, joining string) error {
	if strings.HasPrefix(own, "https://") && strings.HasPrefix(joining, "http://") {
		return invalid("peer_url", "%q: the cluster's members speak TLS; use https", joining)
	}
	return nil
}
