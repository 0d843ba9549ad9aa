package agent

// A joined agent's identity: its node certificate and key, the cluster CA
// and the managers' addresses, kept in DataDir/agent/identity. The first
// start with a join token makes them (Join); later starts load them
// (LoadIdentity). The key is made here and never leaves the node.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/pki"
)

// Files of the identity directory.
const (
	identityDirName  = "identity"
	nodeCertFile     = "node.pem"
	nodeKeyFile      = "node-key.pem"
	clusterCAFile    = "ca.pem"
	managersFileName = "managers.json"
)

// Errors of joining and of the node identity.
var (
	// ErrNoIdentity means the data directory holds no joined identity:
	// start with --join URL --token TOKEN first.
	ErrNoIdentity = errors.New("agent: this node has not joined a cluster")
	// ErrJoined means Join was asked for a data directory that already
	// holds an identity.
	ErrJoined = errors.New("agent: this node has already joined a cluster")
)

// IdentityDir is where a joined agent keeps its identity.
func IdentityDir(dataDir string) string { return filepath.Join(dataDir, "agent", identityDirName) }

// HasIdentity reports whether dataDir holds a joined identity.
func HasIdentity(dataDir string) bool {
	_, err := os.Stat(filepath.Join(IdentityDir(dataDir), nodeCertFile))
	return err == nil
}

// JoinConfig is what Join needs.
type JoinConfig struct {
	DataDir string
	// URL is a manager's API address (https://host:port).
	URL string
	// Token is the worker join token (berth join-token worker).
	Token    string
	Hostname string
	Address  string
	Labels   map[string]string
	Logger   *slog.Logger
}

// Identity is a joined node's identity. Its certificate is replaced in
// place when renewed; clients from Client pick up the new one on their next
// connection.
type Identity struct {
	dir    string
	nodeID string
	role   string
	caPEM  []byte
	ca     *x509.Certificate
	log    *slog.Logger

	cert atomic.Pointer[tls.Certificate]

	mu       sync.Mutex
	managers []string
}

// Join admits this node to a cluster with a worker join token: it makes a
// key and a CSR, sends them to URL over a connection that trusts the
// manager only if it presents the CA the token pins, and stores the node
// certificate, key, CA and manager list under dataDir. The node id goes
// where the agent keeps it, so the next registration is as this node.
func Join(ctx context.Context, cfg JoinConfig) (*Identity, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if HasIdentity(cfg.DataDir) {
		return nil, fmt.Errorf("%w (identity in %s); remove that directory to join again", ErrJoined, IdentityDir(cfg.DataDir))
	}
	tok, err := pki.ParseJoinToken(cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("agent: --token: %w", err)
	}
	if tok.Role != pki.RoleWorker {
		return nil, errors.New("agent: that is a manager join token; an agent joins with the worker token (berth join-token worker), a manager with `berth server --join`")
	}
	if cfg.Hostname == "" {
		if cfg.Hostname, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("agent: hostname: %w", err)
		}
	}
	u, err := url.Parse(strings.TrimSpace(cfg.URL))
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("agent: --join %q: want https://host:port", cfg.URL)
	}
	keyPEM, csrPEM, err := pki.NewNodeKey(cfg.Hostname)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = pki.PinnedTLSConfig(tok.CADigest)
	c, err := api.NewClient(api.ClientConfig{Addr: u.String(), HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		return nil, fmt.Errorf("agent: --join: %w", err)
	}
	resp, err := c.Join(ctx, api.JoinRequest{Token: cfg.Token, CSRPEM: string(csrPEM), Hostname: cfg.Hostname,
		Address: cfg.Address, Labels: cfg.Labels})
	if err != nil {
		var pe *pki.CAPinError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("agent: the manager at %s %s: a man in the middle, or a token of another cluster", u.String(), pe.Error())
		}
		return nil, fmt.Errorf("agent: joining through %s: %w", u.String(), err)
	}
	// The answer must be from the pinned cluster too.
	ca, err := parseCert([]byte(resp.CAPEM))
	if err != nil || pki.CertDigest(ca) != tok.CADigest {
		return nil, fmt.Errorf("agent: the manager at %s answered with a CA other than the token's (%s)", u.String(), tok.CADigest)
	}
	id, role, _, err := pki.VerifyNode(ca, []byte(resp.CertPEM), time.Now())
	if err != nil || id != resp.NodeID {
		return nil, fmt.Errorf("agent: the manager sent a node certificate that does not check out (%q, %v)", id, err)
	}
	if _, err := tls.X509KeyPair([]byte(resp.CertPEM), keyPEM); err != nil {
		return nil, fmt.Errorf("agent: the node certificate is not for our key: %w", err)
	}
	managers := resp.Managers
	if len(managers) == 0 {
		managers = []string{u.String()}
	}
	dir := IdentityDir(cfg.DataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	// The certificate is written last: its presence is what HasIdentity
	// looks for, so a crash before it leaves a directory Join may redo.
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{nodeKeyFile, keyPEM, 0o600},
		{clusterCAFile, []byte(resp.CAPEM), 0o644},
		{filepath.Join("..", "node-id"), []byte(resp.NodeID + "\n"), 0o600},
	} {
		if err := pki.WriteFileAtomic(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return nil, err
		}
	}
	if err := writeManagers(dir, managers); err != nil {
		return nil, err
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, nodeCertFile), []byte(resp.CertPEM), 0o644); err != nil {
		return nil, err
	}
	cfg.Logger.Info("joined the cluster", "node", resp.NodeID, "role", role, "manager", u.String(), "ca", tok.CADigest)
	return LoadIdentity(cfg.DataDir, cfg.Logger)
}

// LoadIdentity reads the identity Join stored in dataDir; ErrNoIdentity if
// there is none.
func LoadIdentity(dataDir string, log *slog.Logger) (*Identity, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := IdentityDir(dataDir)
	if !HasIdentity(dataDir) {
		return nil, fmt.Errorf("%w: no %s", ErrNoIdentity, filepath.Join(dir, nodeCertFile))
	}
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("agent: identity: %w", err)
		}
		return b, nil
	}
	certPEM, err := read(nodeCertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(nodeKeyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := read(clusterCAFile)
	if err != nil {
		return nil, err
	}
	ca, err := parseCert(caPEM)
	if err != nil {
		return nil, fmt.Errorf("agent: identity: %s: %w", clusterCAFile, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("agent: identity: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("agent: identity: %w", err)
	}
	cert.Leaf = leaf
	// An expired certificate is still loaded: the manager refuses it with a
	// clear error, and renewing needs a valid one, so the node must join
	// again; the log says so.
	nodeID, role, err := pki.NodeIdentity(leaf)
	if err != nil {
		return nil, fmt.Errorf("agent: identity: %w", err)
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("agent: identity: the node certificate is not from the stored CA: %w", err)
	}
	if time.Now().After(leaf.NotAfter) {
		log.Error("the node certificate has expired: remove the identity directory and join again", "dir", dir, "expired", leaf.NotAfter)
	}
	id := &Identity{dir: dir, nodeID: nodeID, role: role, caPEM: caPEM, ca: ca, log: log.WithGroup("identity")}
	id.cert.Store(&cert)
	if b, err := os.ReadFile(filepath.Join(dir, managersFileName)); err == nil {
		_ = json.Unmarshal(b, &id.managers)
	}
	return id, nil
}

// NodeID is the node id the certificate names.
func (id *Identity) NodeID() string { return id.nodeID }

// Role is the node role the certificate names.
func (id *Identity) Role() string { return id.role }

// CAPEM is the cluster CA certificate.
func (id *Identity) CAPEM() []byte { return id.caPEM }

// Certificate is the node's current certificate.
func (id *Identity) Certificate() *tls.Certificate { return id.cert.Load() }

// Managers are the managers' API URLs last learned.
func (id *Identity) Managers() []string {
	id.mu.Lock()
	defer id.mu.Unlock()
	return slices.Clone(id.managers)
}

// Client returns an API client that authenticates with the node
// certificate (its renewals included), trusts only the cluster CA, and
// fails over between the known managers; extra addresses (such as the
// --join URL) are tried after them.
func (id *Identity) Client(log *slog.Logger, extra ...string) (*api.Client, error) {
	addrs := append(id.Managers(), extra...)
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: no manager address in %s", ErrNoIdentity, filepath.Join(id.dir, managersFileName))
	}
	return api.NewClient(api.ClientConfig{Addrs: addrs, CACertPEM: id.caPEM, Logger: log,
		GetCertificate: func() (*tls.Certificate, error) { return id.cert.Load(), nil }})
}

// RefreshManagers asks the cluster for its managers, keeps their API URLs
// on disk and gives them to c to fail over between. The list is only ever
// replaced by a non-empty one.
func (id *Identity) RefreshManagers(ctx context.Context, c *api.Client) error {
	ms, err := c.ClusterManagers(ctx)
	if err != nil {
		return fmt.Errorf("agent: listing the managers: %w", err)
	}
	var urls []string
	for _, m := range ms {
		if m.APIURL != "" && !slices.Contains(urls, m.APIURL) {
			urls = append(urls, m.APIURL)
		}
	}
	if len(urls) == 0 {
		return nil
	}
	slices.Sort(urls)
	id.mu.Lock()
	changed := !slices.Equal(urls, id.managers)
	id.managers = urls
	id.mu.Unlock()
	if err := c.SetAddrs(urls); err != nil {
		return err
	}
	if changed {
		id.log.Info("manager list updated", "managers", urls)
		return writeManagers(id.dir, urls)
	}
	return nil
}

// Renew asks for a new certificate for the node's key, checks it and keeps
// it (on disk and for new connections).
func (id *Identity) Renew(ctx context.Context, c *api.Client) error {
	keyPEM, err := os.ReadFile(filepath.Join(id.dir, nodeKeyFile))
	if err != nil {
		return fmt.Errorf("agent: renew: %w", err)
	}
	k, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return fmt.Errorf("agent: renew: %w", err)
	}
	csrPEM, err := pki.CSRFor(k, id.nodeID)
	if err != nil {
		return err
	}
	resp, err := c.Renew(ctx, csrPEM)
	if err != nil {
		return fmt.Errorf("agent: renew: %w", err)
	}
	nodeID, role, leaf, err := pki.VerifyNode(id.ca, []byte(resp.CertPEM), time.Now())
	if err != nil || nodeID != id.nodeID || role != id.role {
		return fmt.Errorf("agent: renew: the manager sent a certificate for %q (%s), want %s: %v", nodeID, role, id.nodeID, err)
	}
	cert, err := tls.X509KeyPair([]byte(resp.CertPEM), keyPEM)
	if err != nil {
		return fmt.Errorf("agent: renew: %w", err)
	}
	cert.Leaf = leaf
	if err := pki.WriteFileAtomic(filepath.Join(id.dir, nodeCertFile), []byte(resp.CertPEM), 0o644); err != nil {
		return err
	}
	id.cert.Store(&cert)
	id.log.Info("node certificate renewed", "expires", leaf.NotAfter)
	return nil
}

// RunRenewal renews the certificate when a third of its lifetime is left
// (pki.NodeRenewAt), retrying with back-off, until ctx ends.
func (id *Identity) RunRenewal(ctx context.Context, c *api.Client, clock Clock) {
	if clock == nil {
		clock = realClock{}
	}
	retry := 5 * time.Second
	for {
		wait := pki.NodeRenewAt(id.cert.Load().Leaf).Sub(clock.Now())
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-clock.After(wait):
			}
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := id.Renew(rctx, c)
		cancel()
		if err == nil {
			retry = 5 * time.Second
			continue
		}
		if ctx.Err() != nil {
			return
		}
		id.log.Warn("renewing the node certificate failed; will retry", "err", err, "in", retry, "expires", id.cert.Load().Leaf.NotAfter)
		select {
		case <-ctx.Done():
			return
		case <-clock.After(retry):
		}
		retry = min(2*retry, 10*time.Minute)
	}
}

func writeManagers(dir string, urls []string) error {
	b, err := json.Marshal(urls)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return pki.WriteFileAtomic(filepath.Join(dir, managersFileName), append(b, '\n'), 0o644)
}

func parseCert(certPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}
