package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// tlsManager is the fake manager with an endpoints stream, a certificate
// stream and a CSR signer, all fed by the test.
type tlsManager struct {
	*meshManager
	certs chan api.GatewayCertificates
	ca    *signingCA

	mu     sync.Mutex
	signed []string // the DNS names of every CSR signed
}

func (m *tlsManager) GatewayCertificates(ctx context.Context) (<-chan api.GatewayCertificates, error) {
	return m.certs, nil
}

func (m *tlsManager) SignGatewayCertificate(ctx context.Context, csrPEM []byte) ([]byte, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil {
		return nil, errors.New("not PEM")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.signed = append(m.signed, strings.Join(csr.DNSNames, ","))
	m.mu.Unlock()
	return m.ca.sign(csr.PublicKey, csr.DNSNames, time.Now().Add(-time.Minute), time.Now().Add(90*24*time.Hour)), nil
}

func (m *tlsManager) signedNames() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.signed...)
}

// signingCA is a test CA.
type signingCA struct {
	t    *testing.T
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newSigningCA(t *testing.T) *signingCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &signingCA{t: t, cert: cert, key: key, pool: pool}
}

func (ca *signingCA) sign(pub any, names []string, notBefore, notAfter time.Time) []byte {
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		ca.t.Error(err)
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// upload returns an uploaded certificate named name for names.
func (ca *signingCA) upload(name string, notBefore, notAfter time.Time, names ...string) api.GatewayCertificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return api.GatewayCertificate{Name: name, CertPEM: string(ca.sign(&key.PublicKey, names, notBefore, notAfter)),
		KeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))}
}

func fingerprintPEM(certPEM string) [32]byte {
	b, _ := pem.Decode([]byte(certPEM))
	return sha256.Sum256(b.Bytes)
}

// startTLSAgent runs an agent with an HTTPS entrypoint against a tlsManager.
func startTLSAgent(t *testing.T) (*Agent, *tlsManager, *harness) {
	t.Helper()
	h := newHarness(t)
	mm := &tlsManager{meshManager: &meshManager{Manager: h.m}, certs: make(chan api.GatewayCertificates, 16), ca: newSigningCA(t)}
	h.cfg.Mesh = &MeshConfig{HTTPAddr: "127.0.0.1:0", HTTPSAddr: "127.0.0.1:0"}
	a, err := New(h.cfg, mm)
	if err != nil {
		t.Fatal(err)
	}
	a.retryMin = 5 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, func() bool { return a.MeshHTTPSAddr() != nil }, "the HTTPS entrypoint listens")
	return a, mm, h
}

// handshake connects to the HTTPS entrypoint with SNI name, trusting only
// pool, and returns the leaf certificate the gateway served.
func handshake(a *Agent, name string, pool *x509.CertPool, maxVersion uint16) (*x509.Certificate, error) {
	c, err := tls.Dial("tcp", a.MeshHTTPSAddr().String(), &tls.Config{ServerName: name, RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: maxVersion})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// The gateway serves an uploaded certificate by SNI, and a replacement from
// the next handshake on, without a restart.
func TestMeshServesUploadedCertificatesBySNI(t *testing.T) {
	a, mm, _ := startTLSAgent(t)
	now := time.Now()
	first := mm.ca.upload("upload", now.Add(-time.Hour), now.Add(24*time.Hour), "upload.test")
	other := mm.ca.upload("other", now.Add(-time.Hour), now.Add(24*time.Hour), "other.test")
	expired := mm.ca.upload("old", now.Add(-48*time.Hour), now.Add(-time.Hour), "old.test")
	mm.send(api.Endpoints{})
	// An expired certificate among them is left out, not a reason to refuse
	// the others.
	mm.certs <- api.GatewayCertificates{Certificates: []api.GatewayCertificate{expired, other, first}}
	var leaf *x509.Certificate
	eventually(t, func() bool {
		var err error
		leaf, err = handshake(a, "upload.test", mm.ca.pool, 0)
		return err == nil && sha256.Sum256(leaf.Raw) == fingerprintPEM(first.CertPEM)
	}, "upload.test served its uploaded certificate")
	if l, err := handshake(a, "other.test", mm.ca.pool, 0); err != nil || sha256.Sum256(l.Raw) != fingerprintPEM(other.CertPEM) {
		t.Fatalf("other.test: %v", err)
	}
	second := mm.ca.upload("upload", now.Add(-time.Hour), now.Add(48*time.Hour), "upload.test")
	mm.certs <- api.GatewayCertificates{Certificates: []api.GatewayCertificate{other, second}}
	eventually(t, func() bool {
		l, err := handshake(a, "upload.test", mm.ca.pool, 0)
		return err == nil && sha256.Sum256(l.Raw) == fingerprintPEM(second.CertPEM)
	}, "the replaced certificate is served")
	// TLS 1.1 is refused.
	if _, err := handshake(a, "upload.test", mm.ca.pool, tls.VersionTLS11); err == nil {
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	// The entrypoints are written down for tools.
	b, err := os.ReadFile(filepath.Join(a.cfg.DataDir, MeshAddrFile))
	if err != nil || !strings.Contains(string(b), "https "+a.MeshHTTPSAddr().String()+"\n") ||
		!strings.Contains(string(b), "http "+a.MeshHTTPAddr().String()+"\n") {
		t.Fatalf("%s: %q %v", MeshAddrFile, b, err)
	}
}

// A route host without an uploaded certificate gets one from the gateway CA
// through the manager: exact hosts by name, hosts under a wildcard route by
// the wildcard (signed once for all of them); other hosts get none.
func TestMeshIssuesRouteCertificates(t *testing.T) {
	a, mm, _ := startTLSAgent(t)
	mm.send(api.Endpoints{Services: []api.ServiceEndpoints{{
		Service: "web", LoadBalancing: api.LBRoundRobin,
		Routes:   []api.RouteSpec{{Host: "Shop.test", Path: "/", Port: "http"}, {Host: "*.wild.test", Path: "/", Port: "http"}},
		Backends: []api.EndpointBackend{},
	}}})
	eventually(t, func() bool {
		_, err := handshake(a, "shop.test", mm.ca.pool, 0)
		return err == nil
	}, "shop.test gets a certificate that verifies against the CA")
	for _, host := range []string{"a.wild.test", "b.wild.test"} {
		if _, err := handshake(a, host, mm.ca.pool, 0); err != nil {
			t.Fatalf("%s: %v", host, err)
		}
	}
	if _, err := handshake(a, "unknown.test", mm.ca.pool, 0); err == nil {
		t.Fatal("a host no route names got a certificate")
	}
	got := mm.signedNames()
	if strings.Join(got, " ") != "shop.test *.wild.test" {
		t.Fatalf("signed %q, want one CSR for shop.test and one for *.wild.test", got)
	}
}
