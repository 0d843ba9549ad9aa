package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// ErrNoCertificate is returned to a TLS handshake for a name the gateway has
// no certificate for.
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
			return g.issued.get(name, g.opts.Now(), g.opts.IssueCert)
		}
	}
	if t.certs.def != nil {
		return t.certs.def, nil
	}
	return nil, fmt.Errorf("%w for %q", ErrNoCertificate, name)
}
