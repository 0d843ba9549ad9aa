package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/store"
)

// Who may call a route. The admin token may call every route; a node
// certificate (from the cluster CA, verified by TLS) only node routes, and
// only for its own node id.
type access int

const (
	// adminOnly routes need the admin token.
	adminOnly access = iota
	// nodeAccess routes take the admin token or a node certificate; a path
	// value {id} must then be the certificate's node id.
	nodeAccess
)

// caller is who sent a request.
type caller struct {
	admin bool
	// nodeID and role come from a verified node certificate.
	nodeID, role string
}

type callerKey struct{}

// callerOf returns who sent r (set by the auth middleware).
func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(callerKey{}).(caller)
	return c
}

// errNeedAuth is the 401 for a request with neither a token nor a node
// certificate.
var errNeedAuth = &api.Error{Code: api.CodeUnauthorized, Status: http.StatusUnauthorized,
	Message: "missing credentials: send Authorization: Bearer <admin token>, or a node certificate from `berth agent --join`"}

// authenticate finds who sent r. A bearer token, when sent, decides (a
// wrong one is refused even with a good certificate); otherwise a client
// certificate that TLS verified against the cluster CA names a node.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (caller, error) {
	if auth := r.Header.Get("Authorization"); auth != "" {
		tok, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || !s.tokens.Match(strings.TrimSpace(tok)) {
			// Never the token itself: a typo of the real one would leak it.
			s.badToken.record(s.now(), remoteHost(r), r.Method, r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Bearer realm="berth", error="invalid_token"`)
			return caller{}, &api.Error{Code: api.CodeUnauthorized, Status: http.StatusUnauthorized, Message: "invalid token"}
		}
		return caller{admin: true}, nil
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		id, role, err := pki.NodeIdentity(r.TLS.VerifiedChains[0][0])
		if err != nil {
			s.log.Warn("rejected a client certificate that names no node", "method", r.Method, "path", r.URL.Path,
				"remote", r.RemoteAddr, "cn", r.TLS.VerifiedChains[0][0].Subject.CommonName, "err", err)
			return caller{}, &api.Error{Code: api.CodeForbidden, Status: http.StatusForbidden,
				Message: "the client certificate is not a node certificate: " + err.Error()}
		}
		return caller{nodeID: id, role: role}, nil
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="berth"`)
	return caller{}, errNeedAuth
}

// authorized wraps h with authentication and the access check of its route.
func (s *Server) authorized(acc access, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.authenticate(w, r)
		if err == nil && !c.admin {
			err = s.checkNode(r, acc, c)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// checkNode refuses a node certificate on an admin route, and on a node
// route that names another node.
func (s *Server) checkNode(r *http.Request, acc access, c caller) error {
	if acc != nodeAccess {
		return s.forbid(r, c, "a node certificate may only call the agent endpoints; "+r.Method+" "+r.URL.Path+" needs the admin token")
	}
	if id := r.PathValue("id"); id != "" && id != c.nodeID {
		return s.forbid(r, c, "node "+c.nodeID+" may only act for itself, not for node "+id)
	}
	return s.checkNodeExists(r, c)
}

// nodeCheckTTL is how long a node found in the store is taken to exist
// without asking again: a removed node's certificate stops working within
// it.
const nodeCheckTTL = 2 * time.Second

// checkNodeExists refuses a certificate whose node was removed (`berth
// node rm`): it must join again. Found nodes are remembered for
// nodeCheckTTL, so heartbeats do not each cost a read.
func (s *Server) checkNodeExists(r *http.Request, c caller) error {
	now := s.now()
	if v, ok := s.knownNodes.Load(c.nodeID); ok && now.Sub(v.(time.Time)) < nodeCheckTTL {
		return nil
	}
	if _, err := s.st.Nodes.Get(r.Context(), c.nodeID); errors.Is(err, store.ErrNotFound) {
		s.knownNodes.Delete(c.nodeID)
		return s.forbid(r, c, "node "+c.nodeID+" was removed from the cluster; join again with a join token")
	} else if err != nil {
		return err
	}
	s.knownNodes.Store(c.nodeID, now)
	return nil
}

// forbid logs a refused request and returns its 403.
func (s *Server) forbid(r *http.Request, c caller, msg string) error {
	s.log.Warn("refused a node certificate", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr,
		"cn", c.nodeID, "role", c.role, "reason", msg)
	return &api.Error{Code: api.CodeForbidden, Status: http.StatusForbidden, Message: msg}
}

// maxRegistrationBytes bounds a registration body (topology included).
const maxRegistrationBytes = 4 << 20

// registerAsNode guards POST /nodes/register for node certificates: the
// registration must name the certificate's node (which checkNode found in
// the store: it was created by /join, and a node removed with `berth node
// rm` cannot come back with its old certificate but must join again). The admin token
// registers any node, as the local agent of `berth up` does.
func (s *Server) registerAsNode(w http.ResponseWriter, r *http.Request) error {
	c := callerOf(r)
	if c.admin {
		return s.registerNode(w, r)
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxRegistrationBytes+1))
	if err != nil {
		return err
	}
	if len(b) > maxRegistrationBytes {
		return &http.MaxBytesError{Limit: maxRegistrationBytes}
	}
	var reg struct {
		NodeID string `json:"node_id"`
	}
	if err := json.Unmarshal(b, &reg); err != nil {
		return invalid("", "the registration is not JSON: %s", err.Error())
	}
	if reg.NodeID != c.nodeID {
		return s.forbid(r, c, "the registration names node "+quoteOrNone(reg.NodeID)+" but the certificate is node "+c.nodeID)
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	return s.register(w, r, false)
}

func quoteOrNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return `"` + s + `"`
}

// Defaults of the wrong-token log.
const (
	// badTokenLogEvery is how often a source that keeps sending a wrong
	// token gets a summary line.
	badTokenLogEvery = time.Minute
	// badTokenSources bounds the table of sources: it is fed by
	// unauthenticated requests.
	badTokenSources = 1024
)

// failureLog aggregates the WARN lines of a failure that anyone can cause
// at will (a wrong token): the first failure from a source logs at once,
// later ones from it are counted and logged as one summary line per
// interval. Sources past the table's cap are counted together. Its
// memory is bounded by max entries whatever the input; a source quiet for
// an interval is forgotten.
type failureLog struct {
	log   *slog.Logger
	msg   string
	every time.Duration
	max   int
	now   func() time.Time

	mu      sync.Mutex
	sources map[string]*failureSource
	// overflow counts failures from sources not in the full table, since
	// overflowLogged.
	overflow       int
	overflowLogged time.Time
	swept          time.Time   // the last flush
	timer          *time.Timer // flushes pending counts; nil when none is armed
}

// failureSource is one source's failures since its last line.
type failureSource struct {
	logged           time.Time // when its last line was written
	count            int       // failures since then, not yet logged
	method, path     string    // of the latest of them
	firstSinceLogged time.Time
}

// maxLoggedPath is how much of a refused request's path is kept and logged.
const maxLoggedPath = 256

// clip cuts s to at most n bytes, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// sourceKey is the failure-log key of a client address: the address
// itself for IPv4, its /64 for IPv6.
func sourceKey(host string) string {
	a, err := netip.ParseAddr(host)
	if err != nil || a.Unmap().Is4() {
		return clip(host, 64)
	}
	p, err := a.WithZone("").Prefix(64)
	if err != nil {
		return clip(host, 64)
	}
	return p.String()
}

func newFailureLog(log *slog.Logger, msg string, every time.Duration, max int, now func() time.Time) *failureLog {
	return &failureLog{log: log, msg: msg, every: every, max: max, now: now, sources: map[string]*failureSource{}}
}

// record notes a failure from source at now.
func (l *failureLog) record(now time.Time, source, method, path string) {
	// Unauthenticated input: bound what is kept and logged per source, and
	// count an IPv6 client's /64 as one source (one host has all of it).
	source, method, path = sourceKey(source), clip(method, 16), clip(path, maxLoggedPath)
	l.mu.Lock()
	defer l.mu.Unlock()
	// Sweep the table at most a few times an interval, not per request:
	// a flood of wrong tokens must stay cheap.
	if now.Sub(l.swept) >= l.every/8 {
		l.flushLocked(now)
		l.swept = now
	}
	src := l.sources[source]
	switch {
	case src == nil && len(l.sources) >= l.max:
		// Full of sources seen within the interval: count this one
		// with the others, in one line per interval.
		l.overflow++
		l.flushOverflowLocked(now)
		l.armLocked()
	case src == nil:
		l.sources[source] = &failureSource{logged: now}
		l.log.Warn(l.msg, "remote", source, "method", method, "path", path,
			"note", fmt.Sprintf("repeats from this source are counted, one line per %s", l.every))
	default:
		if src.count == 0 {
			src.firstSinceLogged = now
		}
		src.count++
		src.method, src.path = method, path
		l.armLocked()
	}
}

// flushLocked writes the summaries that are due at now and forgets sources
// that stayed quiet for an interval (their next failure logs at once).
func (l *failureLog) flushLocked(now time.Time) {
	for k, src := range l.sources {
		if now.Sub(src.logged) < l.every {
			continue
		}
		if src.count == 0 {
			delete(l.sources, k)
			continue
		}
		l.log.Warn(l.msg, "remote", k, "count", src.count, "since", src.firstSinceLogged.UTC().Format(time.RFC3339),
			"last_method", src.method, "last_path", src.path)
		src.logged, src.count = now, 0
	}
	l.flushOverflowLocked(now)
}

func (l *failureLog) flushOverflowLocked(now time.Time) {
	if l.overflow > 0 && now.Sub(l.overflowLogged) >= l.every {
		l.log.Warn(l.msg, "remote", "(other sources)", "count", l.overflow,
			"note", fmt.Sprintf("more than %d sources; counted together, one line per %s", l.max, l.every))
		l.overflow, l.overflowLogged = 0, now
	}
}

// armLocked makes sure pending counts are written even if no failure
// follows them: one timer, armed while anything may be pending.
func (l *failureLog) armLocked() {
	if l.timer != nil {
		return
	}
	l.timer = time.AfterFunc(l.every, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.timer = nil
		now := l.now()
		l.flushLocked(now)
		l.swept = now
		pending := l.overflow > 0
		for _, src := range l.sources {
			pending = pending || src.count > 0
		}
		if pending {
			l.armLocked()
		}
	})
}
