package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Lifetimes of gateway CA certificates.
const (
	CALifetime   = 10 * 365 * 24 * time.Hour
	LeafLifetime = 90 * 24 * time.Hour
)

// ErrCA is wrapped by errors about a gateway CA's certificate or key.
var ErrCA = errors.New("gateway: CA")

// CA is the gateway's certificate authority: it issues the certificates of
// HTTPS routes that have no uploaded certificate. It must be a different CA,
// with a different key, from the one of the Berth API (internal/pki), so that
// a leaked gateway certificate or key gives no access to the API.
type CA struct {
	// Now is the clock certificates are dated by; default time.Now.
	Now func() time.Time

	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
}

// NewCA creates a CA named name with a new P-256 key.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("%w: key: %w", ErrCA, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Berth gateway"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("%w: create: %w", ErrCA, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: parse: %w", ErrCA, err)
	}
	return &CA{cert: cert, certPEM: pemBlock("CERTIFICATE", der), key: key}, nil
}

// LoadCA reads a CA kept by its owner (see CertPEM and KeyPEM).
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCA, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: key is %T, want ECDSA", ErrCA, pair.PrivateKey)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCA, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%w: certificate %q is not a CA", ErrCA, cert.Subject.CommonName)
	}
	return &CA{cert: cert, certPEM: pemBlock("CERTIFICATE", pair.Certificate[0]), key: key}, nil
}

// CertPEM returns the CA certificate, for clients to trust.
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// KeyPEM returns the CA's private key, for its owner to keep.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCA, err)
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

// Pool returns a certificate pool holding only the CA, for clients.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Issue returns a certificate for names (host names, "*." wildcards or IP
// addresses) valid for LeafLifetime. It fits Options.IssueCert:
//
//	IssueCert: func(name string) (*tls.Certificate, error) { return ca.Issue(name) }
func (ca *CA) Issue(names ...string) (*tls.Certificate, error) {
	now := ca.now()
	certPEM, keyPEM, err := ca.IssuePEM(now.Add(-5*time.Minute), now.Add(LeafLifetime), names...)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCA, err)
	}
	return &pair, nil
}

// IssuePEM returns a certificate for names valid from notBefore to notAfter,
// and its key, in PEM: the shape of an uploaded Cert. Tests use it to make
// expired certificates.
func (ca *CA) IssuePEM(notBefore, notAfter time.Time, names ...string) (certPEM, keyPEM []byte, err error) {
	if len(names) == 0 {
		return nil, nil, fmt.Errorf("%w: issue: no names", ErrCA)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: key: %w", ErrCA, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: issue for %v: %w", ErrCA, names, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrCA, err)
	}
	chain := append(pemBlock("CERTIFICATE", der), ca.certPEM...)
	return chain, pemBlock("EC PRIVATE KEY", kder), nil
}

func (ca *CA) now() time.Time {
	if ca.Now != nil {
		return ca.Now()
	}
	return time.Now()
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("gateway: crypto/rand failed: %v", err)) // crypto/rand does not fail on Linux
	}
	return n
}
