package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
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
			s.log.Warn("rejected request with a wrong token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
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
