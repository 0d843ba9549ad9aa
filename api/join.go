package api

import (
	"context"
	"net/http"
	"net/url"
)

// Node roles a join token grants.
const (
	RoleWorker  = "worker"
	RoleManager = "manager"
)

// CodeRateLimited is the error code of a 429: too many requests from one
// address (POST /join is rate-limited).
const CodeRateLimited = "rate_limited"

// MaxJoinRequestBytes is the largest body POST /join accepts.
const MaxJoinRequestBytes = 16 << 10

// JoinRequest is what a new worker sends to POST /join: a join token, a CSR
// for the key it made (the key never leaves the node), and what the node
// is.
type JoinRequest struct {
	// Token is the worker join token (berth join-token worker).
	Token string `json:"token"`
	// CSRPEM is a certificate request (PEM) for the key the new node made; the key never leaves it.
	CSRPEM string `json:"csr_pem"`
	// Hostname is the new node's name.
	Hostname string `json:"hostname"`
	// Address is where other nodes reach the new node.
	Address string `json:"address,omitempty"`
	// Labels are the new node's labels.
	Labels map[string]string `json:"labels,omitempty"`
}

// String describes the request without its token.
func (r JoinRequest) String() string { return "join request of " + r.Hostname }

// JoinResponse is what POST /join answers: the node's id, its certificate
// (signed by the cluster CA, CommonName the node id), the CA certificate,
// and the API URLs of the managers.
type JoinResponse struct {
	// NodeID is the id the cluster gave the new node (the CommonName of its certificate).
	NodeID string `json:"node_id"`
	// CertPEM is the node's certificate (PEM), signed by the cluster CA.
	CertPEM string `json:"cert_pem"`
	// CAPEM is the cluster CA certificate (PEM) the node trusts managers by.
	CAPEM string `json:"ca_pem"`
	// Managers are the API URLs of the managers, to fail over between.
	Managers []string `json:"managers"`
}

// RenewRequest is what a node sends to POST /agent/renew, over mTLS with its
// current certificate: a CSR (for the same or a new key).
type RenewRequest struct {
	// CSRPEM is a certificate request (PEM) for the node's new key.
	CSRPEM string `json:"csr_pem"`
}

// RenewResponse is a renewed node certificate and the CA certificate.
type RenewResponse struct {
	// CertPEM is the node's new certificate (PEM).
	CertPEM string `json:"cert_pem"`
	// CAPEM is the cluster CA certificate (PEM).
	CAPEM string `json:"ca_pem"`
}

// JoinTokens are the cluster's current join tokens (GET
// /cluster/join-tokens, admin only).
type JoinTokens struct {
	// Worker is the token agents join with (berth agent --join).
	Worker string `json:"worker"`
	// Manager is the token managers join with (berth server --join).
	Manager string `json:"manager"`
}

// String hides the tokens.
func (JoinTokens) String() string { return "join tokens" }

// Join asks the manager to admit a new worker node. The client needs no
// token or client certificate; its TLS settings decide which manager it
// trusts (agents pin the CA digest the token carries).
func (c *Client) Join(ctx context.Context, req JoinRequest) (JoinResponse, error) {
	var out JoinResponse
	err := c.doJSON(ctx, http.MethodPost, "/join", nil, req, &out)
	return out, err
}

// Renew asks for a new certificate for the node the client's certificate
// names, for the key of csrPEM.
func (c *Client) Renew(ctx context.Context, csrPEM []byte) (RenewResponse, error) {
	var out RenewResponse
	err := c.doJSON(ctx, http.MethodPost, "/agent/renew", nil, RenewRequest{CSRPEM: string(csrPEM)}, &out)
	return out, err
}

// JoinTokens returns the current join tokens.
func (c *Client) JoinTokens(ctx context.Context) (JoinTokens, error) {
	var out JoinTokens
	err := c.doJSON(ctx, http.MethodGet, "/cluster/join-tokens", nil, nil, &out)
	return out, err
}

// RotateJoinToken replaces the join token of role (RoleWorker or
// RoleManager) and returns the tokens: the old one no longer admits
// anyone; nodes that joined with it keep working.
func (c *Client) RotateJoinToken(ctx context.Context, role string) (JoinTokens, error) {
	var out JoinTokens
	err := c.doJSON(ctx, http.MethodPost, "/cluster/join-tokens/"+url.PathEscape(role)+"/rotate", nil, nil, &out)
	return out, err
}
