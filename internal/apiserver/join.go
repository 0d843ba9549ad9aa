package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/ids"
	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/store"
)

// Errors of join-token verification.
var (
	// ErrBadJoinToken means a join token is malformed, for another
	// cluster, or not (or no longer) the cluster's token for its role.
	ErrBadJoinToken = errors.New("apiserver: invalid join token")
	// ErrNoCA means the server was configured without the cluster CA, so it
	// can neither verify join tokens nor sign node certificates.
	ErrNoCA = errors.New("apiserver: no cluster CA configured")
)

// Defaults of the join rate limit (Config.JoinBurst, Config.JoinEvery).
const (
	DefaultJoinBurst = 10
	DefaultJoinEvery = time.Second
)

// VerifyJoinToken checks a join token against the cluster's current tokens
// and returns the role it grants (pki.RoleWorker or pki.RoleManager). A
// malformed token, one for another cluster, or one rotated away is an
// error wrapping ErrBadJoinToken whose message never repeats the token.
func (s *Server) VerifyJoinToken(ctx context.Context, token string) (string, error) {
	if s.cfg.CA == nil {
		return "", ErrNoCA
	}
	t, err := pki.ParseJoinToken(token)
	if err != nil {
		return "", fmt.Errorf("%w: %s", ErrBadJoinToken, strings.TrimPrefix(err.Error(), "pki: "))
	}
	if t.CADigest != s.cfg.CA.Digest() {
		return "", fmt.Errorf("%w: it is for another cluster (CA %s, this cluster's is %s)", ErrBadJoinToken, t.CADigest, s.cfg.CA.Digest())
	}
	rec, err := s.joinTokens(ctx)
	if err != nil {
		return "", err
	}
	current := rec.Worker
	if t.Role == pki.RoleManager {
		current = rec.Manager
	}
	if !pki.TokenEqual(token, current) {
		return "", fmt.Errorf("%w: it is not the cluster's current %s token (rotated away, or never issued)", ErrBadJoinToken, t.Role)
	}
	return t.Role, nil
}

// joinTokens returns the stored tokens, creating both at first use.
func (s *Server) joinTokens(ctx context.Context) (store.JoinTokensRecord, error) {
	return s.st.JoinTokens(ctx, func() (store.JoinTokensRecord, error) {
		w, err := pki.NewJoinToken(s.cfg.CA, pki.RoleWorker)
		if err != nil {
			return store.JoinTokensRecord{}, err
		}
		m, err := pki.NewJoinToken(s.cfg.CA, pki.RoleManager)
		if err != nil {
			return store.JoinTokensRecord{}, err
		}
		return store.JoinTokensRecord{Worker: w, Manager: m, Updated: s.now().UTC()}, nil
	})
}

func (s *Server) needCA() error {
	if s.cfg.CA == nil {
		return &api.Error{Code: api.CodeUnavailable, Status: http.StatusServiceUnavailable,
			Message: "this manager has no cluster CA, so nodes cannot join through it"}
	}
	return nil
}

func (s *Server) getJoinTokens(w http.ResponseWriter, r *http.Request) error {
	if err := s.needCA(); err != nil {
		return err
	}
	rec, err := s.joinTokens(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, 200, api.JoinTokens{Worker: rec.Worker, Manager: rec.Manager})
	return nil
}

func (s *Server) rotateJoinToken(w http.ResponseWriter, r *http.Request) error {
	if err := s.needCA(); err != nil {
		return err
	}
	role := r.PathValue("role")
	if role != pki.RoleWorker && role != pki.RoleManager {
		return invalid("role", "%q is not a role: rotate the worker or the manager token", role)
	}
	ctx := r.Context()
	for range casRetries {
		rec, err := s.joinTokens(ctx)
		if err != nil {
			return err
		}
		tok, err := pki.NewJoinToken(s.cfg.CA, role)
		if err != nil {
			return err
		}
		if role == pki.RoleWorker {
			rec.Worker = tok
		} else {
			rec.Manager = tok
		}
		rec.Updated = s.now().UTC()
		err = s.st.SetJoinTokens(ctx, &rec)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		s.log.Info("join token rotated", "role", role)
		writeJSON(w, 200, api.JoinTokens{Worker: rec.Worker, Manager: rec.Manager})
		return nil
	}
	return &api.Error{Code: api.CodeConflict, Status: 409, Message: "the join tokens are being changed concurrently; try again"}
}

// join admits a worker: it proves the token, signs the node's CSR and
// stores the node, in that order, so a refused request stores nothing.
func (s *Server) join(w http.ResponseWriter, r *http.Request) error {
	if err := s.needCA(); err != nil {
		return err
	}
	if !s.joinLimit.allow(remoteHost(r), s.now()) {
		s.log.Warn("join rate limit hit", "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", "1")
		return &api.Error{Code: api.CodeRateLimited, Status: http.StatusTooManyRequests,
			Message: "too many join attempts from this address; wait and try again"}
	}
	r.Body = http.MaxBytesReader(w, r.Body, api.MaxJoinRequestBytes)
	var req api.JoinRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	role, err := s.VerifyJoinToken(ctx, req.Token)
	if err != nil {
		if !errors.Is(err, ErrBadJoinToken) {
			return err
		}
		s.log.Warn("refused a join", "remote", r.RemoteAddr, "hostname", req.Hostname, "err", err)
		return &api.Error{Code: api.CodeUnauthorized, Status: http.StatusUnauthorized, Field: "token",
			Message: strings.TrimPrefix(err.Error(), "apiserver: ")}
	}
	if role != pki.RoleWorker {
		s.log.Warn("refused a manager token on /join", "remote", r.RemoteAddr, "hostname", req.Hostname)
		return &api.Error{Code: api.CodeForbidden, Status: http.StatusForbidden, Field: "token",
			Message: "this is a manager join token: managers join with `berth server --join URL --token TOKEN`; agents need the worker token (`berth join-token worker`)"}
	}
	if err := validateHostname("hostname", req.Hostname); err != nil {
		return err
	}
	if err := validateAddress("address", req.Address); err != nil {
		return err
	}
	if err := validateLabelMap("labels", req.Labels); err != nil {
		return err
	}
	id := ids.New()
	now := s.now().UTC()
	certPEM, err := s.cfg.CA.SignNode([]byte(req.CSRPEM), id, role, now, s.cfg.NodeCertLifetime)
	if err != nil {
		return invalid("csr_pem", "%s", err.Error())
	}
	n := api.Node{ID: id, Hostname: req.Hostname, Address: req.Address, Labels: req.Labels, Role: role,
		Availability: api.AvailabilityActive, Status: api.NodeDown, CreatedAt: now}
	// The hostname must be free, and stay free until the node is stored
	// (a hostname names one node: ADR 0029).
	for attempt := 1; ; attempt++ {
		err := s.claimHostname(ctx, &n)
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrConflict) || attempt == claimRetries {
			return err
		}
	}
	s.log.Info("node joined", "node", id, "hostname", req.Hostname, "role", role, "remote", r.RemoteAddr)
	writeJSON(w, 200, api.JoinResponse{NodeID: id, CertPEM: string(certPEM), CAPEM: string(s.cfg.CA.CertPEM),
		Managers: s.managerURLs(r)})
	return nil
}

// claimHostname creates n if its hostname is free, guarded against any node
// write since the check; claims on this manager take turns (claimMu).
func (s *Server) claimHostname(ctx context.Context, n *api.Node) error {
	s.claimMu.Lock()
	defer s.claimMu.Unlock()
	rev, err := s.hostnameFree(ctx, n.Hostname, n.ID, "hostname")
	if err != nil {
		return err
	}
	txn := s.st.Txn()
	s.st.Nodes.TxnUnchangedSince(txn, rev)
	s.st.Nodes.TxnCreate(txn, n)
	return txn.Commit(ctx)
}

// managerURLs lists the API URLs of the live managers, or, before any has
// a record, the URL the request came in on.
func (s *Server) managerURLs(r *http.Request) []string {
	var urls []string
	if recs, err := s.st.ManagerRecords(r.Context()); err == nil {
		for _, m := range recs {
			if m.APIURL != "" && !slices.Contains(urls, m.APIURL) {
				urls = append(urls, m.APIURL)
			}
		}
	} else {
		s.log.Warn("cannot list the managers for a joining node", "err", err)
	}
	if len(urls) == 0 && r.Host != "" {
		urls = []string{"https://" + r.Host}
	}
	slices.Sort(urls)
	return urls
}

// renew signs a new certificate for the node (and role) the caller's
// certificate names. A removed node cannot renew (checkNode refuses it).
func (s *Server) renew(w http.ResponseWriter, r *http.Request) error {
	if err := s.needCA(); err != nil {
		return err
	}
	c := callerOf(r)
	if c.nodeID == "" {
		return invalid("", "renew is for node certificates: call it with the node's certificate, not the admin token")
	}
	var req api.RenewRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	certPEM, err := s.cfg.CA.SignNode([]byte(req.CSRPEM), c.nodeID, c.role, s.now().UTC(), s.cfg.NodeCertLifetime)
	if err != nil {
		return invalid("csr_pem", "%s", err.Error())
	}
	s.log.Info("node certificate renewed", "node", c.nodeID, "role", c.role)
	writeJSON(w, 200, api.RenewResponse{CertPEM: string(certPEM), CAPEM: string(s.cfg.CA.CertPEM)})
	return nil
}

func remoteHost(r *http.Request) string {
	h, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return h
}

// rateLimiter is a token bucket per remote address: burst requests at
// once, then one per every.
type rateLimiter struct {
	burst int
	every time.Duration

	mu      sync.Mutex
	buckets map[string]*rateBucket
}

type rateBucket struct {
	tokens float64
	last   time.Time
}

// maxBuckets bounds the limiter's memory: when full, buckets that have
// refilled are dropped.
const maxBuckets = 10000

func newRateLimiter(burst int, every time.Duration) *rateLimiter {
	return &rateLimiter{burst: burst, every: every, buckets: map[string]*rateBucket{}}
}

// allow takes a token from key's bucket if it has one.
func (l *rateLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buckets) >= maxBuckets {
		for k, b := range l.buckets {
			if now.Sub(b.last) >= time.Duration(l.burst)*l.every {
				delete(l.buckets, k)
			}
		}
	}
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			return false
		}
		b = &rateBucket{tokens: float64(l.burst), last: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(l.burst), b.tokens+float64(el)/float64(l.every))
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
