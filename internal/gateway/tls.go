package gateway

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/berth-project/berth/internal/pki"
)

// cipherSuites are the TLS 1.2 suites of Mozilla's "intermediate" profile
// that crypto/tls implements: ECDHE with AES-GCM or ChaCha20-Poly1305, no
// CBC. (TLS 1.3 suites are not configurable, and all are fine.)
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// DefaultCertName is the one name in the gateway's own default certificate,
// served to a TLS client that sends no SNI or a name the gateway has no
// certificate for (when no certificate was uploaded). ".invalid" can never
// be a real host (RFC 2606), so no client can take it for the site it
// wanted: it fails verification with a clear name mismatch, as with
// Traefik's or HAProxy's default certificate, instead of an alert.
const DefaultCertName = "berth-gateway-default.invalid"

// newDefaultCert makes the default certificate, signed by a throwaway CA.
func newDefaultCert() (*tls.Certificate, error) {
	ca, err := pki.NewGatewayCA("Berth gateway default certificate")
	if err != nil {
		return nil, err
	}
	now := time.Now()
	certPEM, keyPEM, err := ca.IssuePEM(now.Add(-5*time.Minute), now.Add(10*365*24*time.Hour), DefaultCertName)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("gateway: default certificate: %w", err)
	}
	return &pair, nil
}

// ticketKeys rotates the session-ticket keys of a TLS config: the newest
// key encrypts new tickets, the one before it still decrypts tickets (so a
// client resumes across one rotation), and any older one is forgotten — a
// key stolen from memory opens at most two rotation periods of sessions.
// crypto/tls's own rotation keeps keys for a week.
type ticketKeys struct {
	mu   sync.Mutex
	cfg  *tls.Config
	keys [][32]byte // newest first, at most 2
}

// rotate adds a new key and drops all but the previous one.
func (t *ticketKeys) rotate() error {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return fmt.Errorf("gateway: session ticket key: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := [][32]byte{k}
	if len(t.keys) > 0 {
		keys = append(keys, t.keys[0])
	}
	t.keys = keys
	t.cfg.SetSessionTicketKeys(keys)
	return nil
}

// ErrNoCertificate is the error of an Options.IssueCert that returned no
// certificate (the handshake then gets the default certificate).
var ErrNoCertificate = errors.New("gateway: no certificate")

// certStore is the certificates of one config, by name.
type certStore struct {
	exact map[string]*tls.Certificate
	wild  map[string]*tls.Certificate // by parent domain: "*.example.test" → "example.test"
	def   *tls.Certificate            // for clients that send no SNI
}

// buildCerts parses and checks certs: each must match its key, be valid at
// now, and cover the names it is listed for.
func buildCerts(certs []Cert, now time.Time) (*certStore, error) {
	s := &certStore{exact: map[string]*tls.Certificate{}, wild: map[string]*tls.Certificate{}}
	var bad invalid
	for i, c := range certs {
		at := fmt.Sprintf("certs[%d]", i)
		pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
		if err != nil {
			reason := err.Error()
			if strings.Contains(reason, "does not match") {
				reason = "the certificate does not match its key (" + reason + ")"
			}
			bad.add(at, "%s", reason)
			continue
		}
		leaf := pair.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
				bad.add(at, "cannot parse the certificate: %v", err)
				continue
			}
			pair.Leaf = leaf
		}
		names := c.Names
		if len(names) == 0 {
			names = leaf.DNSNames
		}
		label := strings.Join(names, ",")
		if label == "" {
			label = leaf.Subject.CommonName
		}
		if now.After(leaf.NotAfter) {
			bad.add(at, "the certificate for %s expired on %s", label, leaf.NotAfter.UTC().Format(time.RFC3339))
			continue
		}
		if now.Before(leaf.NotBefore) {
			bad.add(at, "the certificate for %s is not valid before %s", label, leaf.NotBefore.UTC().Format(time.RFC3339))
			continue
		}
		if len(names) == 0 {
			bad.add(at, "the certificate has no DNS names; list the names it is for")
			continue
		}
		cert := &pair
		for j, n := range names {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			if !covers(leaf, n) {
				bad.add(fmt.Sprintf("%s.names[%d]", at, j), "the certificate (for %s) does not cover %q",
					strings.Join(leaf.DNSNames, ","), n)
				continue
			}
			m, key := s.exact, n
			if parent, ok := strings.CutPrefix(n, "*."); ok {
				m, key = s.wild, parent
			}
			// Two certificates for one name: serve the one that lasts
			// longer, so that uploading a renewed certificate beside the
			// old one does the right thing.
			if old, ok := m[key]; !ok || old.Leaf.NotAfter.Before(leaf.NotAfter) {
				m[key] = cert
			}
		}
		if s.def == nil {
			s.def = cert
		}
	}
	if err := bad.err(); err != nil {
		return nil, err
	}
	return s, nil
}

// covers reports whether leaf is valid for name, a host name or a "*."
// wildcard (which the certificate must then list itself).
func covers(leaf *x509.Certificate, name string) bool {
	if strings.HasPrefix(name, "*.") {
		for _, d := range leaf.DNSNames {
			if strings.EqualFold(d, name) {
				return true
			}
		}
		return false
	}
	return leaf.VerifyHostname(name) == nil
}

// lookup returns the certificate for a server name (lower case, no trailing
// dot), or nil.
func (s *certStore) lookup(name string) *tls.Certificate {
	if c := s.exact[name]; c != nil {
		return c
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c := s.wild[name[i+1:]]; c != nil {
			return c
		}
	}
	return nil
}

// issuedCache keeps certificates from Options.IssueCert, by name.
type issuedCache struct {
	mu    sync.Mutex
	certs map[string]*tls.Certificate
}

// maxIssued bounds the cache; when full it is emptied (names come from
// routes, so it refills with the names in use).
const maxIssued = 4096

// get returns a cached certificate for name that is valid for at least a day
// more, or issues one.
func (c *issuedCache) get(name string, now time.Time, issue func(string) (*tls.Certificate, error)) (*tls.Certificate, error) {
	c.mu.Lock()
	cert := c.certs[name]
	c.mu.Unlock()
	if cert != nil && now.Add(24*time.Hour).Before(cert.Leaf.NotAfter) {
		return cert, nil
	}
	// Issue without the lock: IssueCert may be slow, and other names must
	// not wait for it. Two handshakes for a new name may both issue.
	cert, err := issue(name)
	if err != nil {
		return nil, fmt.Errorf("gateway: issue a certificate for %q: %w", name, err)
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, fmt.Errorf("gateway: issue a certificate for %q: %w", name, ErrNoCertificate)
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("gateway: issued certificate for %q: %w", name, err)
		}
		cp := *cert
		cp.Leaf = leaf
		cert = &cp
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.certs == nil || len(c.certs) >= maxIssued {
		c.certs = map[string]*tls.Certificate{}
	}
	c.certs[name] = cert
	return cert, nil
}

// getCertificate chooses the certificate for a TLS handshake: an uploaded one
// by SNI, else one from Options.IssueCert for a host that a route names, else
// the first uploaded certificate.
func (g *Gateway) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	t := g.tbl.Load()
	if name != "" {
		if c := t.certs.lookup(name); c != nil {
			return c, nil
		}
		if g.opts.IssueCert != nil && t.router.names(name) {
			c, err := g.issued.get(name, g.opts.Now(), g.opts.IssueCert)
			if err == nil {
				return c, nil
			}
			// The client still gets a handshake (and a certificate it
			// will not accept), not an internal_error alert.
			g.log.Warn("cannot issue a certificate; serving the default one", "name", name, "err", err)
		}
	}
	if t.certs.def != nil {
		return t.certs.def, nil
	}
	return g.defaultCert, nil
}
