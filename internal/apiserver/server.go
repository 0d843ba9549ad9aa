// Package apiserver is Berth's HTTP API: it authenticates requests, validates
// specs, and writes desired state to the store in one transaction per
// request. Handlers never call a controller; controllers watch the store.
// It also serves agents their assignments and takes their status reports, so
// that agents never touch the store.
package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/store"
)

// MaxBodyBytes limits every request body.
const MaxBodyBytes = api.MaxSpecBytes + 64<<10

// Config is what the API server needs.
type Config struct {
	Store  *store.Store
	Token  string
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now     func() time.Time
	Version string
	// IsLeader reports whether this manager runs the controllers.
	IsLeader func() bool
	// AssignmentDebounce batches task changes before an agent's set is
	// re-sent. Default 10ms.
	AssignmentDebounce time.Duration
	// VersionHistory is how many versions of each service are kept.
	// Default api.DefaultVersionHistory.
	VersionHistory int
	// CA is the cluster CA: it pins join tokens and signs node
	// certificates. Without it nodes cannot join (503), but the admin
	// token and certificates verified by the TLS layer still work.
	CA *pki.CA
	// NodeCertLifetime is how long node certificates are valid (default
	// pki.NodeCertLifetime).
	NodeCertLifetime time.Duration
	// JoinBurst and JoinEvery rate-limit POST /join per remote address:
	// JoinBurst attempts at once, then one per JoinEvery (defaults
	// DefaultJoinBurst, DefaultJoinEvery).
	JoinBurst int
	JoinEvery time.Duration
	// Health, when set, is the manager's own check for GET /healthz (an
	// error: it cannot serve, such as a manager removed from the cluster).
	Health func() error
}

// Server is the API server.
type Server struct {
	cfg    Config
	st     *store.Store
	log    *slog.Logger
	tokens *pki.TokenMatcher
	now    func() time.Time
	agents *agentClients
	// joinLimit rate-limits POST /join per remote address.
	joinLimit *rateLimiter
	// badToken aggregates the log of requests with a wrong token (auth.go).
	badToken *failureLog
	// knownNodes caches node ids found in the store (id → time.Time of the
	// check) for the node-certificate check (auth.go).
	knownNodes sync.Map
	// claimMu makes the writes that claim a hostname on this manager take
	// turns (nodes.go, join.go).
	claimMu sync.Mutex
	// patterns are the API routes Handler registered, for the test that
	// checks the OpenAPI document lists them all.
	patterns []string
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IsLeader == nil {
		cfg.IsLeader = func() bool { return true }
	}
	if cfg.AssignmentDebounce == 0 {
		cfg.AssignmentDebounce = 10 * time.Millisecond
	}
	if cfg.JoinBurst <= 0 {
		cfg.JoinBurst = DefaultJoinBurst
	}
	if cfg.JoinEvery <= 0 {
		cfg.JoinEvery = DefaultJoinEvery
	}
	log := cfg.Logger.WithGroup("api")
	return &Server{
		cfg:    cfg,
		st:     cfg.Store,
		log:    log,
		tokens: pki.NewTokenMatcher(cfg.Token),
		now:    cfg.Now,
		agents: newAgentClients(),

		joinLimit: newRateLimiter(cfg.JoinBurst, cfg.JoinEvery),
		badToken:  newFailureLog(log, "rejected requests with a wrong token", badTokenLogEvery, badTokenSources, cfg.Now),
	}
}

// handlerFunc is a handler that returns its error for writeError.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// Handler returns the HTTP handler with every route.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.patterns = nil
	handle := func(pattern string, h http.Handler) {
		s.patterns = append(s.patterns, pattern)
		mux.Handle(pattern, h)
	}
	// route is for the admin token only; nodeRoute also takes a node
	// certificate, acting for its own node only (see auth.go).
	route := func(pattern string, h handlerFunc) {
		handle(pattern, s.authorized(adminOnly, h))
	}
	nodeRoute := func(pattern string, h handlerFunc) {
		handle(pattern, s.authorized(nodeAccess, h))
	}
	route("GET /api/v1/services", s.listServices)
	route("GET /api/v1/services/{name}", s.getService)
	route("PUT /api/v1/services/{name}", s.putService)
	route("POST /api/v1/services/{name}/scale", s.scaleService)
	route("DELETE /api/v1/services/{name}", s.deleteService)
	route("GET /api/v1/services/{name}/versions", s.listVersions)
	route("POST /api/v1/services/{name}/rollback", s.rollbackService)
	route("POST /api/v1/services/{name}/promote", s.promoteService)
	route("POST /api/v1/services/{name}/restart", s.restartService)
	route("POST /api/v1/services/{name}/resume", s.resumeService)
	route("POST /api/v1/services/{name}/rebalance", s.rebalanceService)
	route("GET /api/v1/services/{name}/tasks", s.serviceTasks)
	route("GET /api/v1/services/{name}/logs", s.serviceLogs)
	route("GET /api/v1/services/{name}/stats", s.serviceStats)
	route("GET /api/v1/tasks", s.listTasks)
	route("GET /api/v1/tasks/{id}", s.getTask)
	route("GET /api/v1/nodes", s.listNodes)
	route("GET /api/v1/nodes/{id}", s.getNode)
	route("GET /api/v1/nodes/{id}/topology", s.nodeTopology)
	route("PATCH /api/v1/nodes/{id}", s.updateNode)
	route("DELETE /api/v1/nodes/{id}", s.removeNode)
	nodeRoute("POST /api/v1/nodes/register", s.registerAsNode)
	nodeRoute("GET /api/v1/nodes/{id}/assignments", s.assignments)
	nodeRoute("POST /api/v1/nodes/{id}/status", s.nodeStatus)
	nodeRoute("GET /api/v1/endpoints", s.streamEndpoints)
	route("GET /api/v1/info", s.info)
	route("GET /api/v1/certificates", s.listCertificates)
	route("GET /api/v1/certificates/{name}", s.getCertificate)
	route("PUT /api/v1/certificates/{name}", s.putCertificate)
	route("DELETE /api/v1/certificates/{name}", s.deleteCertificate)
	nodeRoute("GET /api/v1/gateway/ca", s.getGatewayCA)
	nodeRoute("POST /api/v1/agent/gateway/certificates", s.signGatewayCSR)
	nodeRoute("GET /api/v1/agent/certificates", s.streamGatewayCertificates)
	nodeRoute("GET /api/v1/agent/drained/{task}", s.drained)
	nodeRoute("POST /api/v1/agent/renew", s.renew)
	route("GET /api/v1/cluster/join-tokens", s.getJoinTokens)
	route("POST /api/v1/cluster/join-tokens/{role}/rotate", s.rotateJoinToken)
	// Public: the join token in the body is the credential; rate-limited.
	handle("POST /api/v1/join", s.public(s.join))
	s.managerRoutes(handle) // GET, DELETE /cluster/managers[/{id}], POST /cluster/managers/join (managers.go)
	mux.Handle("GET /api/v1/openapi.json", s.public(s.openAPI))
	mux.Handle("GET /docs", s.public(s.docsPage))
	mux.Handle("GET /healthz", s.public(s.healthz))
	mux.Handle("/", s.public(func(w http.ResponseWriter, r *http.Request) error {
		return &api.Error{Code: api.CodeNotFound, Status: http.StatusNotFound,
			Message: "no route for " + r.Method + " " + r.URL.Path + " (see /api/v1/openapi.json)"}
	}))
	return mux
}

func (s *Server) public(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// writeError is the one place that maps errors to HTTP statuses and bodies.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := toAPIError(err)
	switch {
	case e.Status < 500:
	case r.Context().Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		// The client went away or the server is shutting down (it
		// cancels every request's context): nothing failed. A
		// cancellation while the request is still wanted (a store
		// call cut by a lost leadership) stays an error.
		s.log.Debug("request cancelled", "method", r.Method, "path", r.URL.Path, "err", err)
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, e.Status, e)
}

func toAPIError(err error) *api.Error {
	var ae *api.Error
	var fe *api.FieldError
	var ve api.ValidationErrors
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		if ae.Status == 0 {
			ae.Status = statusOf(ae.Code)
		}
		return ae
	case errors.As(err, &ve) && len(ve) > 0:
		msg := ve[0].Message
		if len(ve) > 1 {
			msg += " (and " + ve[1:].Error() + ")"
		}
		return &api.Error{Code: api.CodeInvalid, Status: 400, Field: ve[0].Field, Message: msg}
	case errors.As(err, &fe):
		return &api.Error{Code: api.CodeInvalid, Status: 400, Field: fe.Field, Message: fe.Message}
	case errors.As(err, &mbe):
		return &api.Error{Code: api.CodeTooLarge, Status: http.StatusRequestEntityTooLarge,
			Message: "request body is larger than the limit of " + api.ByteSize(mbe.Limit).String()}
	case errors.Is(err, store.ErrNotFound):
		return &api.Error{Code: api.CodeNotFound, Status: 404, Message: err.Error()}
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrExists):
		return &api.Error{Code: api.CodeConflict, Status: 409, Message: "changed concurrently, try again: " + err.Error()}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &api.Error{Code: api.CodeUnavailable, Status: 503, Message: "request cancelled or timed out"}
	}
	return &api.Error{Code: api.CodeInternal, Status: 500, Message: "internal error (see the server log)"}
}

func statusOf(code string) int {
	switch code {
	case api.CodeInvalid:
		return 400
	case api.CodeUnauthorized:
		return 401
	case api.CodeForbidden:
		return 403
	case api.CodeNotFound:
		return 404
	case api.CodeConflict:
		return 409
	case api.CodeTooLarge:
		return 413
	case api.CodeUnsupported:
		return 415
	case api.CodeUnavailable:
		return 503
	}
	return 500
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// readJSON decodes a JSON body strictly into v.
func readJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	return api.DecodeStrict(b, v)
}

func invalid(field, format string, args ...any) error {
	return api.Invalid(field, format, args...)
}

func notFound(format string, args ...any) error {
	e := api.Invalid("", format, args...)
	return &api.Error{Code: api.CodeNotFound, Status: 404, Message: e.Message}
}

// healthzTimeout bounds the store read of GET /healthz.
const healthzTimeout = 2 * time.Second

// healthz answers ok only while the manager can serve: its own check
// passes (it was not removed from the cluster) and it can read the store
// (a quorum answers). Otherwise 503 with the reason.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	// Written here, not returned: a load balancer polling an unhealthy
	// manager must not fill its log with errors.
	unhealthy := func(msg string) error {
		writeJSON(w, http.StatusServiceUnavailable, &api.Error{Code: api.CodeUnavailable, Status: http.StatusServiceUnavailable, Message: msg})
		return nil
	}
	if s.cfg.Health != nil {
		if err := s.cfg.Health(); err != nil {
			return unhealthy(err.Error())
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), healthzTimeout)
	defer cancel()
	if _, err := s.st.LeaderID(ctx); err != nil {
		return unhealthy("this manager cannot read the cluster's store (no quorum, or removed from the cluster): " + err.Error())
	}
	_, err := io.WriteString(w, "ok\n")
	return err
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, 200, map[string]any{"version": s.cfg.Version, "leader": s.cfg.IsLeader()})
	return nil
}
