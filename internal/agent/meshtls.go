package agent

// TLS of the node's gateway (ADR 0017): certificates users uploaded come
// from the manager's certificate stream; a route host without one gets a
// certificate from the gateway CA, for a key made here that never leaves
// the node.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/gateway"
)

// GatewayCertsSource is an optional extra of a Manager: the stream of the
// certificates users uploaded, which the node's gateway serves by SNI.
// Without it the gateway serves no uploaded certificate.
type GatewayCertsSource interface {
	// GatewayCertificates streams every uploaded certificate with its key,
	// in full, again after every change; the channel closes when the stream
	// breaks or ctx ends.
	GatewayCertificates(ctx context.Context) (<-chan api.GatewayCertificates, error)
}

// GatewayCertSigner is an optional extra of a Manager: it has the cluster's
// gateway CA sign a certificate request for route hosts. Without it, route
// hosts that no uploaded certificate covers get no certificate of their own.
type GatewayCertSigner interface {
	// SignGatewayCertificate sends a PEM certificate request and returns the
	// signed chain in PEM, leaf first.
	SignGatewayCertificate(ctx context.Context, csrPEM []byte) ([]byte, error)
}

// GatewayCertificates implements GatewayCertsSource.
func (m APIManager) GatewayCertificates(ctx context.Context) (<-chan api.GatewayCertificates, error) {
	return m.C.WatchGatewayCertificates(ctx)
}

// SignGatewayCertificate implements GatewayCertSigner.
func (m APIManager) SignGatewayCertificate(ctx context.Context, csrPEM []byte) ([]byte, error) {
	return m.C.SignGatewayCertificate(ctx, csrPEM)
}

var (
	_ GatewayCertsSource = APIManager{}
	_ GatewayCertSigner  = APIManager{}
)

// meshState is what the gateway's config is made of: the last routing
// state and the uploaded certificates, from two streams. mu serialises
// updates of the gateway so that neither stream undoes the other's.
type meshState struct {
	mu    sync.Mutex
	last  api.Endpoints
	certs []gateway.Cert
	// hosts are the exact (lower-case) route hosts of last, read during
	// TLS handshakes.
	hosts atomic.Pointer[map[string]bool]
}

// setHosts records the route hosts of e.
func (s *meshState) setHosts(e api.Endpoints) {
	hosts := map[string]bool{}
	for _, se := range e.Services {
		for _, r := range se.Routes {
			if r.Host != "" {
				hosts[strings.ToLower(r.Host)] = true
			}
		}
	}
	s.hosts.Store(&hosts)
}

// routeHost reports whether a route names host exactly.
func (s *meshState) routeHost(host string) bool {
	h := s.hosts.Load()
	return h != nil && (*h)[host]
}

// Bounds of issued certificates.
const (
	// renewBefore is how long before its end an issued certificate is
	// replaced. It is longer than the gateway's own margin (a day), so
	// that the gateway, asking again, gets a new certificate.
	renewBefore = 7 * 24 * time.Hour
	// signTimeout bounds one request to the manager to sign.
	signTimeout = 10 * time.Second
	// maxIssuedNames bounds the issuer's cache.
	maxIssuedNames = 4096
)

// certIssuer gets certificates for route hosts from the gateway CA: it is
// the gateway's Options.IssueCert. The gateway calls it during a handshake
// for a host a route names; a host matched by a wildcard route gets the
// wildcard's certificate, shared by every name under it.
type certIssuer struct {
	signer GatewayCertSigner
	// exact reports whether a route names a host exactly.
	exact func(host string) bool
	now   func() time.Time

	mu    sync.Mutex
	cache map[string]*tls.Certificate // by requested name
	// inflight coalesces concurrent handshakes for one name into one
	// signing request; failed remembers a failure for failRetry, so that a
	// flood of handshakes cannot turn into a flood of signing requests.
	inflight map[string]*issueCall
	failed   map[string]failure
}

// issueCall is one signing request that handshakes for a name wait on.
type issueCall struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

// failure is a remembered signing failure.
type failure struct {
	err   error
	until time.Time
}

// failRetry is how long a failed signing request is not repeated.
const failRetry = 10 * time.Second

// issue returns a certificate for the server name host.
func (ci *certIssuer) issue(host string) (*tls.Certificate, error) {
	name := host
	if !ci.exact(host) {
		i := strings.IndexByte(host, '.')
		if i <= 0 {
			return nil, fmt.Errorf("agent: no route names %q", host)
		}
		name = "*." + host[i+1:]
	}
	now := ci.now()
	ci.mu.Lock()
	c := ci.cache[name]
	if c != nil && now.Add(renewBefore).Before(c.Leaf.NotAfter) {
		ci.mu.Unlock()
		return c, nil
	}
	if f, ok := ci.failed[name]; ok && now.Before(f.until) {
		ci.mu.Unlock()
		return nil, f.err
	}
	if call, ok := ci.inflight[name]; ok {
		ci.mu.Unlock()
		<-call.done
		return call.cert, call.err
	}
	call := &issueCall{done: make(chan struct{})}
	if ci.inflight == nil {
		ci.inflight = map[string]*issueCall{}
	}
	ci.inflight[name] = call
	ci.mu.Unlock()

	call.cert, call.err = ci.sign(name)

	ci.mu.Lock()
	delete(ci.inflight, name)
	if call.err != nil {
		if ci.failed == nil || len(ci.failed) >= maxIssuedNames {
			ci.failed = map[string]failure{}
		}
		ci.failed[name] = failure{err: call.err, until: now.Add(failRetry)}
	} else {
		delete(ci.failed, name)
		if ci.cache == nil || len(ci.cache) >= maxIssuedNames {
			ci.cache = map[string]*tls.Certificate{}
		}
		ci.cache[name] = call.cert
	}
	ci.mu.Unlock()
	close(call.done)
	return call.cert, call.err
}

// sign makes a P-256 key and has the manager sign a certificate for name.
func (ci *certIssuer) sign(name string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("agent: key for %s: %w", name, err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{name}}, key)
	if err != nil {
		return nil, fmt.Errorf("agent: certificate request for %s: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), signTimeout)
	defer cancel()
	chainPEM, err := ci.signer.SignGatewayCertificate(ctx, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		return nil, fmt.Errorf("agent: certificate for %s: %w", name, err)
	}
	cert := &tls.Certificate{PrivateKey: key}
	for rest := chainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			cert.Certificate = append(cert.Certificate, b.Bytes)
		}
	}
	if len(cert.Certificate) == 0 {
		return nil, fmt.Errorf("agent: certificate for %s: the manager answered no certificate", name)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("agent: certificate for %s: %w", name, err)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("agent: certificate for %s: it is not for the key sent", name)
	}
	cert.Leaf = leaf
	return cert, nil
}

// usableCerts turns uploaded certificates into the gateway's, leaving out
// (and returning the names of) those the gateway would refuse now: that one
// certificate expired must not stop every route of the node. The API checks
// each one at upload; this catches those that expired since.
func usableCerts(certs []api.GatewayCertificate, now time.Time) (out []gateway.Cert, bad []string) {
	for _, c := range certs {
		pair, err := tls.X509KeyPair([]byte(c.CertPEM), []byte(c.KeyPEM))
		if err == nil {
			var leaf *x509.Certificate
			if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err == nil {
				switch {
				case now.After(leaf.NotAfter):
					err = errors.New("expired")
				case now.Before(leaf.NotBefore):
					err = errors.New("not valid yet")
				case len(leaf.DNSNames) == 0:
					err = errors.New("no DNS names")
				}
			}
		}
		if err != nil {
			bad = append(bad, c.Name)
			continue
		}
		out = append(out, gateway.Cert{CertPEM: []byte(c.CertPEM), KeyPEM: []byte(c.KeyPEM)})
	}
	return out, bad
}

// followCertificates holds the certificate stream open, reconnecting with
// back-off, and updates the gateway's certificates on every message: a
// certificate uploaded or replaced is served from the next handshake on.
func (a *Agent) followCertificates(ctx context.Context, gw *gateway.Gateway, src GatewayCertsSource) {
	limit := logLimiter{every: 30 * time.Second}
	followStream(ctx, a, "certificates", &limit, src.GatewayCertificates, nil,
		func(m api.GatewayCertificates) { a.applyCertificates(gw, m) })
}

// applyCertificates puts the uploaded certificates of m into the gateway,
// with the last routing state.
func (a *Agent) applyCertificates(gw *gateway.Gateway, m api.GatewayCertificates) {
	// The gateway checks validity by the system clock (its default).
	certs, bad := usableCerts(m.Certificates, time.Now())
	if len(bad) > 0 {
		a.log.Warn("uploaded certificates left out: expired, not valid yet or unreadable", "names", bad)
	}
	a.mesh.mu.Lock()
	defer a.mesh.mu.Unlock()
	a.mesh.certs = certs
	a.updateGatewayLocked(gw)
}
