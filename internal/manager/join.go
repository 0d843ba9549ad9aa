package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/pki"
	"github.com/berth-project/berth/internal/store"
)

// JoinConfig makes a new manager join an existing cluster at its first
// start.
type JoinConfig struct {
	// URL is any manager's API URL (https://10.0.0.1:7443).
	URL string
	// Token is the manager join token (`berth join-token manager`).
	Token string
}

// ErrJoin is wrapped by every error of joining a cluster.
var ErrJoin = errors.New("manager: join")

// Files a joined manager keeps in its data dir, besides the CA in pki/.
const (
	memberNameFile  = "etcd-member-name"
	managerCertFile = "manager.pem"
	managerKeyFile  = "manager-key.pem"
)

// pinnedClient returns an API client for url that trusts the server only if
// the chain it presents holds the CA whose digest the token carries: the
// token, not the network, says which cluster is the right one.
func pinnedClient(url, digest string) (*api.Client, error) {
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: the manager at %s presents no certificate", ErrJoin, url)
		}
		var seen []string
		for _, c := range cs.PeerCertificates {
			d := pki.CertDigest(c)
			seen = append(seen, d)
			if d != digest || !c.IsCA {
				continue
			}
			roots := x509.NewCertPool()
			roots.AddCert(c)
			inter := x509.NewCertPool()
			for _, ic := range cs.PeerCertificates[1:] {
				inter.AddCert(ic)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
				return fmt.Errorf("%w: the manager at %s presents a certificate its CA did not sign: %w", ErrJoin, url, err)
			}
			return nil
		}
		if len(seen) < 2 {
			return fmt.Errorf("%w: the manager at %s presents no CA certificate in its chain (the token expects CA %s): is it an older Berth?", ErrJoin, url, digest)
		}
		return fmt.Errorf("%w: the manager at %s presents CA %s, the token expects %s: wrong address, or a man in the middle",
			ErrJoin, url, strings.Join(seen[1:], ","), digest)
	}
	hc := &http.Client{Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSHandshakeTimeout: 10 * time.Second,
		// Verification is VerifyConnection's: against the pinned CA only.
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true, VerifyConnection: verify},
	}}
	return api.NewClient(api.ClientConfig{Addr: url, HTTPClient: hc})
}

// join asks the manager at jc.URL to admit this manager (named id) and keeps
// what it answers in dataDir: the cluster CA, the admin token, this
// manager's certificate and its etcd member name. It returns the
// initial-cluster string for the embedded member.
func join(ctx context.Context, jc JoinConfig, dataDir, id, apiURL, peerURL string) (string, error) {
	tok, err := pki.ParseJoinToken(jc.Token)
	if err != nil {
		return "", fmt.Errorf("%w: --token: %w", ErrJoin, err)
	}
	if tok.Role != pki.RoleManager {
		return "", fmt.Errorf("%w: --token is a worker token: a manager joins with the manager token (`berth join-token manager`); workers join with `berth agent --join`", ErrJoin)
	}
	c, err := pinnedClient(jc.URL, tok.CADigest)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrJoin, err)
	}
	keyPEM, csrPEM, err := pki.NewNodeKey(id)
	if err != nil {
		return "", err
	}
	jctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	resp, err := c.JoinManager(jctx, api.ManagerJoinRequest{Token: jc.Token, CSRPEM: string(csrPEM), Name: id, PeerURL: peerURL, APIURL: apiURL})
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrJoin, jc.URL, err)
	}
	pkiDir := filepath.Join(dataDir, "pki")
	ca, err := pki.ParseCA([]byte(resp.CACertPEM), []byte(resp.CAKeyPEM), pkiDir)
	if err != nil {
		return "", fmt.Errorf("%w: the CA in the answer: %w", ErrJoin, err)
	}
	if ca.Digest() != tok.CADigest {
		return "", fmt.Errorf("%w: the manager sent CA %s, the token expects %s", ErrJoin, ca.Digest(), tok.CADigest)
	}
	if err := ca.SaveCA(); err != nil {
		return "", err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{TokenFile, []byte(resp.AdminToken + "\n"), 0o600},
		{filepath.Join("pki", managerKeyFile), keyPEM, 0o600},
		{filepath.Join("pki", managerCertFile), []byte(resp.CertPEM), 0o644},
		{memberNameFile, []byte(id + "\n"), 0o600},
	} {
		if err := pki.WriteFileAtomic(filepath.Join(dataDir, f.name), f.data, f.mode); err != nil {
			return "", err
		}
	}
	return resp.InitialCluster, nil
}

// peerConfig decides how the embedded member is reached by other managers.
// It returns nil for the single-member default (peer on a loopback port of
// its own choosing, exactly as before HA managers) unless this manager
// joins, was given --etcd-peer-port, or advertises a non-loopback address.
func peerConfig(cfg Config, listenHost, id string, fresh bool) *store.PeerConfig {
	if len(cfg.EtcdEndpoints) > 0 {
		return nil
	}
	adv := listenHost
	if len(cfg.AdvertiseHosts) > 0 {
		adv = cfg.AdvertiseHosts[0]
	}
	unspecified := adv == "" || adv == "0.0.0.0" || adv == "::"
	loopback := unspecified || adv == "localhost" || (net.ParseIP(adv) != nil && net.ParseIP(adv).IsLoopback())
	if cfg.Join == nil && cfg.EtcdPeerPort == 0 && loopback {
		return nil
	}
	if unspecified {
		adv = "127.0.0.1"
	}
	p := &store.PeerConfig{AdvertiseHost: adv, Port: cfg.EtcdPeerPort, ListenHost: listenHost}
	if p.ListenHost == "" || p.ListenHost == "::" {
		p.ListenHost = "0.0.0.0"
	}
	if p.Port == 0 && !loopback {
		p.Port = store.DefaultPeerPort
	}
	// A new member is named by the manager's id; one made before keeps the
	// name it has (the single-member default named it "berth").
	p.Name = "berth"
	if b, err := os.ReadFile(filepath.Join(cfg.DataDir, memberNameFile)); err == nil && strings.TrimSpace(string(b)) != "" {
		p.Name = strings.TrimSpace(string(b))
	} else if fresh {
		p.Name = id
		_ = pki.WriteFileAtomic(filepath.Join(cfg.DataDir, memberNameFile), []byte(id+"\n"), 0o600)
	}
	return p
}
