package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Node roles, as join tokens and node certificates name them.
const (
	RoleWorker  = "worker"
	RoleManager = "manager"
)

// Organizations of node certificates: the role a certificate grants.
const (
	OrgWorker  = "berth-worker"
	OrgManager = "berth-manager"
)

// NodeCertLifetime is how long a node certificate is valid. Agents renew
// when a third of it is left (see NodeRenewAt).
const NodeCertLifetime = 30 * 24 * time.Hour

// Errors about node certificates and CSRs.
var (
	// ErrCSR means a certificate signing request is malformed, not
	// self-signed, or uses a key Berth does not accept.
	ErrCSR = errors.New("pki: bad certificate signing request")
	// ErrNodeCert means a certificate is not a valid node certificate of
	// this cluster: wrong CA, expired, or without a node id or role.
	ErrNodeCert = errors.New("pki: not a node certificate of this cluster")
)

// validNodeID matches the node ids certificates may carry: what ids.New
// makes and what agents accept as file names.
var validNodeID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ValidNodeID reports whether id may name a node in a certificate.
func ValidNodeID(id string) bool { return validNodeID.MatchString(id) }

func roleOrg(role string) (string, error) {
	switch role {
	case RoleWorker:
		return OrgWorker, nil
	case RoleManager:
		return OrgManager, nil
	}
	return "", fmt.Errorf("pki: unknown node role %q (want %s or %s)", role, RoleWorker, RoleManager)
}

// ParseCA returns the CA held in certPEM and keyPEM (as the store keeps it).
// dir, if not empty, is where leaf certificates it issues for this manager
// (ServerCertificate, MemberCertificate) are kept; SaveCA writes the CA
// itself there.
func ParseCA(certPEM, keyPEM []byte, dir string) (*CA, error) {
	cert, key, err := parsePair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("pki: CA: the certificate is not a CA")
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("pki: CA: the key does not match the certificate")
	}
	return &CA{Cert: cert, CertPEM: certPEM, key: key, dir: dir}, nil
}

// KeyPEM returns the CA's private key in PEM, for storing it where every
// manager can load it. Never log or send it to a node.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// SaveCA writes the CA's certificate and key into its directory (the key
// with mode 0600), replacing what is there: a manager that adopts the
// cluster's CA from the store keeps it for its next start.
func (ca *CA) SaveCA() error {
	if ca.dir == "" {
		return errors.New("pki: CA has no directory")
	}
	return writePair(ca.dir, CAFile, caKeyFile, ca.CertPEM, ca.key)
}

// Digest returns the CA's digest: "sha256:" and the hex SHA-256 of its
// certificate (DER), as join tokens carry it.
func (ca *CA) Digest() string { return CertDigest(ca.Cert) }

// CertDigest returns "sha256:" and the hex SHA-256 of cert's DER.
func CertDigest(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// NewNodeKey makes a node's private key and a CSR for it. The key stays on
// the node; only the CSR is sent. hostname goes into the CSR's subject as
// a hint; the manager sets the subject it signs.
func NewNodeKey(hostname string) (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	csrPEM, err = CSRFor(key, hostname)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), csrPEM, nil
}

// CSRFor makes a PEM CSR for an existing key (to renew without a new key).
func CSRFor(key *ecdsa.PrivateKey, cn string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ParseKeyPEM parses an EC private key in PEM.
func ParseKeyPEM(keyPEM []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, errors.New("pki: key is not PEM")
	}
	k, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: key: %w", err)
	}
	return k, nil
}

// parseCSR decodes and checks a PEM CSR: its self-signature and its key.
func parseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	b, rest := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: want one PEM block of type CERTIFICATE REQUEST", ErrCSR)
	}
	if len(pemTrim(rest)) > 0 {
		return nil, fmt.Errorf("%w: more than one PEM block", ErrCSR)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: ECDSA keys must be on P-256 or P-384", ErrCSR)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA keys must have at least 2048 bits", ErrCSR)
		}
	default:
		return nil, fmt.Errorf("%w: unsupported key type %T", ErrCSR, csr.PublicKey)
	}
	return csr, nil
}

func pemTrim(b []byte) []byte {
	for len(b) > 0 && (b[0] == '\n' || b[0] == '\r' || b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// SignNode issues a node certificate for the key in csrPEM: CommonName
// nodeID, Organization the role's (OrgWorker or OrgManager), valid for
// client authentication from now (less a minute of clock skew) for
// lifetime (NodeCertLifetime if zero). The CSR's subject and extensions
// are ignored: the manager decides who the node is.
func (ca *CA) SignNode(csrPEM []byte, nodeID, role string, now time.Time, lifetime time.Duration) ([]byte, error) {
	if !ValidNodeID(nodeID) || nodeID == MemberCN {
		return nil, fmt.Errorf("pki: node id %q is not valid", nodeID)
	}
	org, err := roleOrg(role)
	if err != nil {
		return nil, err
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if lifetime <= 0 {
		lifetime = NodeCertLifetime
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: nodeID, Organization: []string{org}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign node certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// NodeIdentity returns the node id and role a certificate names. It does
// not check the chain: call it on a certificate TLS (or VerifyNode) has
// verified.
func NodeIdentity(cert *x509.Certificate) (id, role string, err error) {
	if cert == nil {
		return "", "", fmt.Errorf("%w: no certificate", ErrNodeCert)
	}
	if len(cert.Subject.Organization) != 1 {
		return "", "", fmt.Errorf("%w: want exactly one organization (%s or %s)", ErrNodeCert, OrgWorker, OrgManager)
	}
	switch cert.Subject.Organization[0] {
	case OrgWorker:
		role = RoleWorker
	case OrgManager:
		role = RoleManager
	default:
		return "", "", fmt.Errorf("%w: organization %q names no node role", ErrNodeCert, cert.Subject.Organization[0])
	}
	if !ValidNodeID(cert.Subject.CommonName) {
		return "", "", fmt.Errorf("%w: common name %q is not a node id", ErrNodeCert, cert.Subject.CommonName)
	}
	return cert.Subject.CommonName, role, nil
}

// VerifyNode checks that certPEM (its first block) is a node certificate
// signed by ca, valid at now for client authentication, and returns the
// node id and role it names.
func VerifyNode(ca *x509.Certificate, certPEM []byte, now time.Time) (id, role string, cert *x509.Certificate, err error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return "", "", nil, fmt.Errorf("%w: not a PEM certificate", ErrNodeCert)
	}
	cert, err = x509.ParseCertificate(b.Bytes)
	if err != nil {
		return "", "", nil, fmt.Errorf("%w: %w", ErrNodeCert, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", "", nil, fmt.Errorf("%w: %w", ErrNodeCert, err)
	}
	id, role, err = NodeIdentity(cert)
	return id, role, cert, err
}

// NodeRenewAt is when a node certificate should be replaced: when a third
// of its lifetime is left.
func NodeRenewAt(cert *x509.Certificate) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotAfter.Add(-life / 3)
}

// Dir is the directory the CA keeps its files in ("" for one parsed from
// PEM without a directory).
func (ca *CA) Dir() string { return ca.dir }
