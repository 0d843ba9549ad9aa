package api

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Statuses of a manager in ClusterManager.Status.
const (
	// ManagerReady: the manager is running (its lease-bound record is live).
	ManagerReady = "ready"
	// ManagerDown: its etcd member is in the cluster but the manager is not
	// running (dead, stopped, or cut off). Remove it with `berth manager rm`
	// if it will not come back.
	ManagerDown = "down"
	// ManagerJoining: its etcd member was added but has not started yet.
	ManagerJoining = "joining"
	// ManagerUnreachable: its record is live (its lease has not expired
	// yet) but it does not answer GET /healthz: killed, cut off, or removed.
	ManagerUnreachable = "unreachable"
)

// ClusterManager is one manager of the cluster, as GET /cluster/managers
// lists it: the live managers' records merged with the etcd members.
type ClusterManager struct {
	// ID is the manager's id; for an etcd member with no manager record it
	// is the member's name (or its hex id if it has none yet).
	ID string `json:"id"`
	// APIURL is where the manager serves the API ("" if it is not running).
	APIURL string `json:"api_url,omitempty"`
	// PeerURL is its embedded etcd member's peer URL ("" with an external
	// etcd).
	PeerURL string `json:"peer_url,omitempty"`
	// MemberID is its etcd member id in hex ("" with an external etcd).
	MemberID string `json:"member_id,omitempty"`
	// Leader is set on the manager that runs the controllers (never on an
	// unreachable one).
	Leader bool `json:"leader"`
	// Status is ManagerReady, ManagerDown, ManagerJoining or
	// ManagerUnreachable.
	Status string `json:"status"`
	// Started is when the manager process started (zero if not running).
	Started time.Time `json:"started,omitzero"`
}

// ManagerJoinRequest is what a new manager sends to POST
// /cluster/managers/join: the manager join token, a CSR for its own key,
// its id, and the URLs the others will reach it at.
type ManagerJoinRequest struct {
	// Token is the manager join token (berth join-token manager).
	Token string `json:"token"`
	// CSRPEM is a CSR for the key of the manager's node certificate.
	CSRPEM string `json:"csr_pem"`
	// Name is the new manager's id: its etcd member name and the common
	// name of its certificate.
	Name string `json:"name"`
	// PeerURL is the new etcd member's peer URL (https://host:7444).
	PeerURL string `json:"peer_url"`
	// APIURL is the new manager's API URL (https://host:7443).
	APIURL string `json:"api_url"`
}

// String describes the request without its token.
func (r ManagerJoinRequest) String() string { return "manager join request of " + r.Name }

// ManagerJoinResponse is what a new manager needs to start its etcd member
// in the cluster and serve the API like the others: the cluster CA with its
// key (managers sign certificates), its own certificate, the admin token,
// and etcd's initial-cluster string.
type ManagerJoinResponse struct {
	// CACertPEM is the cluster CA certificate (PEM).
	CACertPEM string `json:"ca_cert_pem"`
	// CAKeyPEM is the cluster CA's private key (PEM): every manager signs node certificates.
	CAKeyPEM string `json:"ca_key_pem"`
	// CertPEM is the manager's node certificate (Organization
	// berth-manager, CommonName its id) for the key of the CSR.
	CertPEM string `json:"cert_pem"`
	// AdminToken is the cluster's admin bearer token.
	AdminToken string `json:"admin_token"`
	// InitialCluster is "name=peerURL,..." for etcd's --initial-cluster,
	// including the new member; empty when the cluster's etcd is external.
	InitialCluster string `json:"initial_cluster,omitempty"`
	// MemberName is the new manager's etcd member name.
	MemberName string `json:"member_name,omitempty"`
	// MemberID is the new manager's etcd member id (hex).
	MemberID string `json:"member_id,omitempty"`
	// Managers are the managers before this one joined.
	Managers []ClusterManager `json:"managers"`
}

// String describes the response without its secrets.
func (r ManagerJoinResponse) String() string { return "manager join response for " + r.MemberName }

// ClusterManagers lists the cluster's managers, the leader marked.
func (c *Client) ClusterManagers(ctx context.Context) ([]ClusterManager, error) {
	var out []ClusterManager
	err := c.doJSON(ctx, http.MethodGet, "/cluster/managers", nil, nil, &out)
	return out, err
}

// JoinManager asks a manager to admit a new one. The client needs no admin
// token; its TLS settings decide which manager it trusts (pin the CA digest
// of the join token).
func (c *Client) JoinManager(ctx context.Context, req ManagerJoinRequest) (ManagerJoinResponse, error) {
	var out ManagerJoinResponse
	err := c.doJSON(ctx, http.MethodPost, "/cluster/managers/join", nil, req, &out)
	return out, err
}

// RemoveManager removes the manager id (an id, member name or hex member id
// from ClusterManagers) from the cluster: its etcd member leaves and it can
// no longer start. The manager serving the request cannot remove itself.
// Without force, a removal that would leave too few running managers for a
// quorum is refused.
func (c *Client) RemoveManager(ctx context.Context, id string, force bool) error {
	_, err := c.RemoveManagerWarn(ctx, id, force)
	return err
}

// RemoveManagerWarn is RemoveManager that also returns the server's
// warnings, such as that the managers left survive the loss of none.
func (c *Client) RemoveManagerWarn(ctx context.Context, id string, force bool) ([]string, error) {
	q := url.Values{}
	if force {
		q.Set("force", "true")
	}
	resp, err := c.do(ctx, http.MethodDelete, "/cluster/managers/"+url.PathEscape(id), q, nil, "")
	if err != nil {
		return nil, err
	}
	defer drainClose(resp.Body)
	return warningsOf(resp.Header), nil
}

// warningsOf returns the texts of a response's Warning headers (RFC 7234:
// `299 berth "text"`).
func warningsOf(h http.Header) []string {
	var out []string
	for _, v := range h.Values("Warning") {
		_, rest, ok := strings.Cut(v, `"`)
		if !ok {
			continue
		}
		if i := strings.LastIndex(rest, `"`); i >= 0 {
			rest = rest[:i]
		}
		out = append(out, strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(rest))
	}
	return out
}
