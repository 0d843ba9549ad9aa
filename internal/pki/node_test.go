package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"
)

func testCA(t *testing.T) *CA {
	t.Helper()
	ca, err := LoadOrCreateCA(t.TempDir(), "test CA")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestSignNodeAndVerify(t *testing.T) {
	ca := testCA(t)
	keyPEM, csrPEM, err := NewNodeKey("host-a")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, role := range []string{RoleWorker, RoleManager} {
		certPEM, err := ca.SignNode(csrPEM, "node1", role, now, 0)
		if err != nil {
			t.Fatal(err)
		}
		id, gotRole, cert, err := VerifyNode(ca.Cert, certPEM, now)
		if err != nil || id != "node1" || gotRole != role {
			t.Fatalf("VerifyNode = %q %q %v, want node1 %s", id, gotRole, err, role)
		}
		if d := cert.NotAfter.Sub(now); d < NodeCertLifetime-time.Minute || d > NodeCertLifetime+time.Minute {
			t.Errorf("lifetime %v, want %v", d, NodeCertLifetime)
		}
		if ra := NodeRenewAt(cert); ra.Before(now.Add(19*24*time.Hour)) || ra.After(now.Add(21*24*time.Hour)) {
			t.Errorf("renew at %v, want about 20 days from now", ra)
		}
		// The key from NewNodeKey matches the certificate.
		k, err := ParseKeyPEM(keyPEM)
		if err != nil || !k.PublicKey.Equal(cert.PublicKey) {
			t.Fatalf("key does not match the certificate: %v", err)
		}
		// Expired, or before it is valid: refused.
		if _, _, _, err := VerifyNode(ca.Cert, certPEM, now.Add(NodeCertLifetime+time.Hour)); !errors.Is(err, ErrNodeCert) {
			t.Errorf("expired certificate accepted: %v", err)
		}
	}
	// Another CA's certificate is refused.
	other := testCA(t)
	certPEM, _ := other.SignNode(csrPEM, "node1", RoleWorker, now, 0)
	if _, _, _, err := VerifyNode(ca.Cert, certPEM, now); !errors.Is(err, ErrNodeCert) {
		t.Fatalf("certificate of another CA accepted: %v", err)
	}
}

func TestSignNodeRefusesBadInput(t *testing.T) {
	ca := testCA(t)
	_, csrPEM, _ := NewNodeKey("h")
	now := time.Now()
	if _, err := ca.SignNode(csrPEM, "../etc", RoleWorker, now, 0); err == nil {
		t.Error("bad node id accepted")
	}
	if _, err := ca.SignNode(csrPEM, "n1", "admin", now, 0); err == nil {
		t.Error("unknown role accepted")
	}
	if _, err := ca.SignNode([]byte("junk"), "n1", RoleWorker, now, 0); !errors.Is(err, ErrCSR) {
		t.Errorf("junk CSR: %v", err)
	}
	// A CSR whose signature does not match its key.
	b, _ := pem.Decode(csrPEM)
	der := append([]byte{}, b.Bytes...)
	der[len(der)-5] ^= 0xff
	bad := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	if _, err := ca.SignNode(bad, "n1", RoleWorker, now, 0); !errors.Is(err, ErrCSR) {
		t.Errorf("tampered CSR: %v", err)
	}
	// A weak RSA key.
	rk, _ := rsa.GenerateKey(rand.Reader, 1024)
	rder, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rk)
	if _, err := ca.SignNode(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: rder}), "n1", RoleWorker, now, 0); !errors.Is(err, ErrCSR) {
		t.Errorf("RSA-1024 CSR: %v", err)
	}
	// A CSR asking to be someone else gets the manager's subject anyway.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := CSRFor(k, "admin")
	certPEM, err := ca.SignNode(csr, "n2", RoleWorker, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	id, role, _, err := VerifyNode(ca.Cert, certPEM, now)
	if err != nil || id != "n2" || role != RoleWorker {
		t.Fatalf("got %q %q %v", id, role, err)
	}
}

func TestNodeIdentityRefusesOtherCertificates(t *testing.T) {
	ca := testCA(t)
	// The API server certificate is signed by the same CA but names no node.
	cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	if _, _, err := NodeIdentity(leaf); !errors.Is(err, ErrNodeCert) {
		t.Fatalf("server certificate taken for a node: %v", err)
	}
}

func TestParseCARoundTrip(t *testing.T) {
	ca := testCA(t)
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	again, err := ParseCA(ca.CertPEM, keyPEM, dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.Digest() != ca.Digest() || !strings.HasPrefix(ca.Digest(), "sha256:") || len(ca.Digest()) != 7+64 {
		t.Fatalf("digest %q vs %q", again.Digest(), ca.Digest())
	}
	if err := again.SaveCA(); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadOrCreateCA(dir, "x")
	if err != nil || !loaded.Cert.Equal(ca.Cert) {
		t.Fatalf("saved CA not loaded back: %v", err)
	}
	// A key of another CA does not match.
	otherKey, _ := testCA(t).KeyPEM()
	if _, err := ParseCA(ca.CertPEM, otherKey, ""); err == nil {
		t.Fatal("mismatched key accepted")
	}
}

func TestJoinTokens(t *testing.T) {
	ca := testCA(t)
	w, err := NewJoinToken(ca, RoleWorker)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := NewJoinToken(ca, RoleManager)
	pw, err := ParseJoinToken(w)
	if err != nil || pw.Role != RoleWorker || pw.CADigest != ca.Digest() || pw.String() != w {
		t.Fatalf("worker token %q parsed as %+v, %v", w, pw, err)
	}
	pm, err := ParseJoinToken(" " + m + "\n")
	if err != nil || pm.Role != RoleManager || pm.String() != m {
		t.Fatalf("manager token %q parsed as %+v, %v", m, pm, err)
	}
	if w2, _ := NewJoinToken(ca, RoleWorker); w2 == w {
		t.Fatal("two tokens are the same")
	}
	if !TokenEqual(w, w+"\n") || TokenEqual(w, m) || TokenHash(w) == TokenHash(m) {
		t.Fatal("TokenEqual or TokenHash wrong")
	}
	if _, err := NewJoinToken(ca, "root"); err == nil {
		t.Fatal("token for an unknown role")
	}
	for _, bad := range []string{"", "berth_abc", w[:len(w)-1], strings.Replace(w, "-w-", "-x-", 1),
		strings.ToUpper(w), w + "-x", strings.Replace(w, JoinTokenPrefix, "BERTH-2-", 1)} {
		if _, err := ParseJoinToken(bad); !errors.Is(err, ErrJoinToken) {
			t.Errorf("ParseJoinToken(%q) = %v, want ErrJoinToken", bad, err)
		} else if bad != "" && len(bad) > 20 && strings.Contains(err.Error(), bad) {
			t.Errorf("error repeats the token: %v", err)
		}
	}
}
