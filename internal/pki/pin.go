package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ErrCAPin means a server did not present the CA a join token pins.
var ErrCAPin = errors.New("pki: the server's CA is not the one the token pins")

// CAPinError says which CA a server presented and which one was expected.
type CAPinError struct {
	// Presented is the digest of the CA the server presented (the last
	// certificate of its chain), Expected the token's.
	Presented, Expected string
}

func (e *CAPinError) Error() string {
	return "presents CA " + e.Presented + ", the token expects " + e.Expected
}

// Unwrap makes errors.Is(err, ErrCAPin) true.
func (e *CAPinError) Unwrap() error { return ErrCAPin }

// PinnedTLSConfig returns a client TLS configuration that trusts a server
// only if its chain holds the CA whose digest (CertDigest) is digest and
// its certificate, signed by that CA, is valid for the name dialled. It is
// how a joining node, which has only a join token, makes sure it talks to
// the cluster and not to a man in the middle. The managers send the CA
// after their certificate for this.
func PinnedTLSConfig(digest string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain is verified in VerifyConnection, against the pinned CA
		// instead of the system roots.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs, digest)
		},
	}
}

func verifyPinned(cs tls.ConnectionState, digest string) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("%w: the server sent no certificate", ErrCAPin)
	}
	var ca *x509.Certificate
	for _, c := range cs.PeerCertificates {
		if CertDigest(c) == digest {
			ca = c
		}
	}
	if ca == nil {
		last := cs.PeerCertificates[len(cs.PeerCertificates)-1]
		return &CAPinError{Presented: CertDigest(last), Expected: digest}
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		if c != ca {
			inter.AddCert(c)
		}
	}
	if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: cs.ServerName}); err != nil {
		return fmt.Errorf("%w: the server's certificate does not verify against the pinned CA: %w", ErrCAPin, err)
	}
	return nil
}

// WithCA returns cert with ca appended to its chain, so that clients that
// pin the CA by digest (PinnedTLSConfig) find it.
func WithCA(cert tls.Certificate, ca *CA) tls.Certificate {
	if len(cert.Certificate) == 0 {
		return cert
	}
	out := cert
	out.Certificate = append(append([][]byte{}, cert.Certificate[0]), ca.Cert.Raw)
	return out
}
