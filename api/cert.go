package api

import (
	"fmt"
	"regexp"
	"time"
)

// Limits of uploaded certificates.
const (
	// MaxCertificateBytes bounds an upload: the certificate chain and the
	// key together, in PEM.
	MaxCertificateBytes = 64 << 10
	// MaxCSRBytes bounds a certificate signing request sent by an agent.
	MaxCSRBytes = 16 << 10
)

var certName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// CheckCertificateName returns an error if name is not a valid certificate
// name: lower-case letters, digits, '-' and '.', at most 253 characters,
// starting and ending with a letter or digit (a host name fits).
func CheckCertificateName(name string) error {
	if len(name) > 253 || !certName.MatchString(name) {
		return Invalid("name", "%q is not a certificate name: use lower-case letters, digits, '-' and '.' (at most 253), such as shop.example.test", truncate(name))
	}
	return nil
}

// CertificateUpload is the body of PUT /api/v1/certificates/{name}: a
// certificate chain (leaf first) and its private key, in PEM.
type CertificateUpload struct {
	// CertPEM is the certificate chain, leaf first.
	CertPEM string `json:"cert_pem"`
	// KeyPEM is the leaf's private key (PKCS #8, EC or PKCS #1), not
	// encrypted.
	KeyPEM string `json:"key_pem"`
}

// Certificate describes an uploaded certificate. It never carries the key.
type Certificate struct {
	// Name is the name it was uploaded under.
	Name string `json:"name"`
	// DNSNames are the host names the leaf certificate is for; the gateway
	// serves it to clients that ask for one of them by SNI.
	DNSNames []string `json:"dns_names"`
	// Subject and Issuer are the leaf's distinguished names.
	Subject string `json:"subject"`
	Issuer  string `json:"issuer"`
	// NotBefore and NotAfter bound the leaf's validity.
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// SHA256 is the hex SHA-256 fingerprint of the leaf certificate (DER).
	SHA256 string `json:"sha256"`
	// Created and Updated are when the certificate was first uploaded and
	// last replaced.
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// GatewayCertificate is an uploaded certificate with its key, as agents get
// it for their gateway (GET /api/v1/agent/certificates).
type GatewayCertificate struct {
	// Name is the uploaded certificate's name.
	Name string `json:"name"`
	// CertPEM is the certificate chain, leaf first (PEM).
	CertPEM string `json:"cert_pem"`
	// KeyPEM is the certificate's private key (PEM); sent to agents only.
	KeyPEM string `json:"key_pem"`
}

// String names the certificate without its key, so that logging one never
// leaks the key.
func (c GatewayCertificate) String() string { return fmt.Sprintf("certificate %s", c.Name) }

// GatewayCertificates is one message of the agents' certificate stream: every
// uploaded certificate, sorted by name, at store revision Revision.
type GatewayCertificates struct {
	// Revision is the store revision the certificates were read at.
	Revision int64 `json:"revision"`
	// Certificates are every uploaded certificate with its key.
	Certificates []GatewayCertificate `json:"certificates"`
}
