package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"
)

// GatewayLeafLifetime is how long a certificate the gateway CA issues is
// valid. The gateway CA itself lives CALifetime, like the cluster CA.
const GatewayLeafLifetime = 90 * 24 * time.Hour

// ErrGatewayCA is wrapped by errors about a gateway CA's certificate or key.
var ErrGatewayCA = errors.New("gateway: CA")

// GatewayCA is the gateway's certificate authority: it issues the
// certificates of HTTPS routes that have no uploaded certificate. It must be
// a different CA, with a different key, from the cluster CA (CA), so that a
// leaked gateway certificate or key gives no access to the API.
type GatewayCA struct {
	// Now is the clock certificates are dated by; default time.Now.
	Now func() time.Time

	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
}

// NewGatewayCA creates a gateway CA named name with a new P-256 key.
func NewGatewayCA(name string) (*GatewayCA, error) {
	key, der, err := newCA(name, "Berth gateway")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGatewayCA, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: parse: %w", ErrGatewayCA, err)
	}
	return &GatewayCA{cert: cert, certPEM: pemBlock("CERTIFICATE", der), key: key}, nil
}

// LoadGatewayCA reads a gateway CA kept by its owner (see CertPEM and
// KeyPEM).
func LoadGatewayCA(certPEM, keyPEM []byte) (*GatewayCA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGatewayCA, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: key is %T, want ECDSA", ErrGatewayCA, pair.PrivateKey)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGatewayCA, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%w: certificate %q is not a CA", ErrGatewayCA, cert.Subject.CommonName)
	}
	return &GatewayCA{cert: cert, certPEM: pemBlock("CERTIFICATE", pair.Certificate[0]), key: key}, nil
}

// CertPEM returns the CA certificate, for clients to trust.
func (ca *GatewayCA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// KeyPEM returns the CA's private key, for its owner to keep.
func (ca *GatewayCA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGatewayCA, err)
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

// Pool returns a certificate pool holding only the CA, for clients.
func (ca *GatewayCA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Issue returns a certificate for names (host names, "*." wildcards or IP
// addresses) valid for GatewayLeafLifetime. It fits gateway.Options.IssueCert:
//
//	IssueCert: func(name string) (*tls.Certificate, error) { return ca.Issue(name) }
func (ca *GatewayCA) Issue(names ...string) (*tls.Certificate, error) {
	now := ca.now()
	certPEM, keyPEM, err := ca.IssuePEM(now.Add(-5*time.Minute), now.Add(GatewayLeafLifetime), names...)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGatewayCA, err)
	}
	return &pair, nil
}

// IssuePEM returns a certificate for names valid from notBefore to notAfter,
// and its key, in PEM: the shape of an uploaded Cert. Tests use it to make
// expired certificates.
func (ca *GatewayCA) IssuePEM(notBefore, notAfter time.Time, names ...string) (certPEM, keyPEM []byte, err error) {
	if len(names) == 0 {
		return nil, nil, fmt.Errorf("%w: issue: no names", ErrGatewayCA)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: key: %w", ErrGatewayCA, err)
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
		return nil, nil, fmt.Errorf("%w: issue for %v: %w", ErrGatewayCA, names, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrGatewayCA, err)
	}
	chain := append(pemBlock("CERTIFICATE", der), ca.certPEM...)
	return chain, pemBlock("EC PRIVATE KEY", kder), nil
}

// SignCSR issues a server certificate for names (DNS names the caller has
// checked) and csr's public key, valid from five minutes before now for
// GatewayLeafLifetime but never past the CA's own expiry, and returns it
// followed by the CA certificate, in PEM. The requester keeps its key.
func (ca *GatewayCA) SignCSR(csr *x509.CertificateRequest, names []string, now time.Time) ([]byte, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: sign: no names", ErrGatewayCA)
	}
	usage := x509.KeyUsageDigitalSignature
	if _, isRSA := csr.PublicKey.(*rsa.PublicKey); isRSA {
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(GatewayLeafLifetime),
		KeyUsage:     usage,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("%w: sign a certificate for %v: %w", ErrGatewayCA, names, err)
	}
	return append(pemBlock("CERTIFICATE", der), ca.certPEM...), nil
}

func (ca *GatewayCA) now() time.Time {
	if ca.Now != nil {
		return ca.Now()
	}
	return time.Now()
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
