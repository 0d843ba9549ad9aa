// Package pki is Berth's certificate authority: it creates and keeps the
// cluster CA, issues the API server's certificate and node certificates
// (from CSRs: the node's key never leaves the node), verifies node
// certificates, and makes the admin token and the join tokens. It also holds
// the gateway CA (GatewayCA), a separate CA with its own key that signs
// route certificates for the gateway. It does not
// serve anything and knows nothing of the store.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names inside the directory a CA is kept in.
const (
	CAFile        = "ca.pem"
	caKeyFile     = "ca-key.pem"
	serverFile    = "server.pem"
	serverKeyFile = "server-key.pem"
)

// Lifetimes.
const (
	CALifetime     = 10 * 365 * 24 * time.Hour
	ServerLifetime = 365 * 24 * time.Hour
	// RenewBefore is how long before expiry a server certificate is replaced.
	RenewBefore = 30 * 24 * time.Hour
)

// CA is a certificate authority with its private key.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     *ecdsa.PrivateKey
	dir     string
}

// LoadOrCreateCA reads the CA kept in dir, or creates one named name there.
func LoadOrCreateCA(dir, name string) (*CA, error) {
	certPEM, err1 := os.ReadFile(filepath.Join(dir, CAFile))
	keyPEM, err2 := os.ReadFile(filepath.Join(dir, caKeyFile))
	if err1 == nil && err2 == nil {
		cert, key, err := parsePair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("pki: CA in %s: %w", dir, err)
		}
		return &CA{Cert: cert, CertPEM: certPEM, key: key, dir: dir}, nil
	}
	if !errors.Is(err1, os.ErrNotExist) && err1 != nil {
		return nil, fmt.Errorf("pki: %w", err1)
	}
	key, der, err := newCA(name, "Berth")
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writePair(dir, CAFile, caKeyFile, certPEM, key); err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, CertPEM: certPEM, key: key, dir: dir}, nil
}

// ServerCertificate returns the API server's certificate for hosts (names and
// IP addresses), issuing a new one when there is none, it expires within
// RenewBefore, or it does not cover every host.
func (ca *CA) ServerCertificate(hosts []string) (tls.Certificate, error) {
	certFile, keyFile, err := ca.leaf(serverFile, serverKeyFile, "berth-api", hosts, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(certFile, keyFile)
}

// MemberCN is the CommonName of member certificates. The embedded etcd
// accepts only it (store.MemberCN), so that the other certificates this CA
// signs — node certificates above all — give no access to the store. It is
// never a node id (SignNode refuses it).
const MemberCN = "berth-etcd"

// MemberCertificate issues (or reuses) the certificate an embedded etcd
// member presents to its peers and clients and uses as a client itself: it
// is valid for both server and client authentication on hosts. It returns
// the paths of the certificate and key files in the CA's directory.
func (ca *CA) MemberCertificate(hosts []string) (certFile, keyFile string, err error) {
	return ca.leaf("etcd.pem", "etcd-key.pem", MemberCN, hosts, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
}

// leaf returns the paths of a certificate signed by ca for hosts, kept in
// the CA's directory under certName and keyName. The one there is reused
// while it is signed by ca, covers every host and is not due for renewal;
// otherwise a new key and certificate replace it.
func (ca *CA) leaf(certName, keyName, cn string, hosts []string, usage ...x509.ExtKeyUsage) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(ca.dir, certName), filepath.Join(ca.dir, keyName)
	certPEM, err1 := os.ReadFile(certFile)
	keyPEM, err2 := os.ReadFile(keyFile)
	if err1 == nil && err2 == nil {
		cert, _, err := parsePair(certPEM, keyPEM)
		if err == nil && time.Until(cert.NotAfter) > RenewBefore && covers(cert, hosts) && cert.CheckSignatureFrom(ca.Cert) == nil {
			return certFile, keyFile, nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Berth"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ServerLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writePair(ca.dir, certName, keyName, certPEM, key); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// CAFilePath is the path of the CA certificate file.
func (ca *CA) CAFilePath() string { return filepath.Join(ca.dir, CAFile) }

func covers(cert *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(cert.IPAddresses, func(c net.IP) bool { return c.Equal(ip) }) {
				return false
			}
		} else if h != "" && !slices.Contains(cert.DNSNames, h) {
			return false
		}
	}
	return true
}

func parsePair(certPEM, keyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, errors.New("not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func writePair(dir, certName, keyName string, certPEM []byte, key *ecdsa.PrivateKey) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, keyName), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, certName), certPEM, 0o644)
}

// WriteFileAtomic writes data to a temporary file, syncs it and renames it
// over path, so that a crash leaves the old or the new file, never half.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("pki: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("pki: crypto/rand failed: %v", err)) // crypto/rand does not fail on Linux
	}
	return n
}

// TokenPrefix starts every admin token, so that leaked tokens are easy to
// find by scanners.
const TokenPrefix = "berth_"

// NewToken returns a fresh random token.
func NewToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("pki: no randomness: %v", err))
	}
	return TokenPrefix + hex.EncodeToString(b)
}

// LoadOrCreateToken reads the token in path, or writes a new one there with
// mode 0600.
func LoadOrCreateToken(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) < 16 {
			return "", fmt.Errorf("pki: token in %s is too short", path)
		}
		return tok, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("pki: %w", err)
	}
	tok := NewToken()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("pki: %w", err)
	}
	if err := WriteFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	return tok, nil
}

// TokenMatcher checks presented tokens against a secret in constant time.
type TokenMatcher struct{ sum [32]byte }

// NewTokenMatcher keeps only the hash of tok.
func NewTokenMatcher(tok string) *TokenMatcher {
	return &TokenMatcher{sum: sha256.Sum256([]byte(tok))}
}

// Match reports whether presented is the token.
func (m *TokenMatcher) Match(presented string) bool {
	s := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(s[:], m.sum[:]) == 1
}

// newCA makes a self-signed CA certificate (DER) for name in organization
// org, with a new P-256 key, valid from an hour ago for CALifetime. The
// cluster CA and the gateway CA are both made here.
func newCA(name, org string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{org}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create: %w", err)
	}
	return key, der, nil
}
