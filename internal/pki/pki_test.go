package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

func TestCAAndServerCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir, "test CA")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, caKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key file: %v %v", fi.Mode(), err)
	}
	again, err := LoadOrCreateCA(dir, "test CA")
	if err != nil || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("CA not reused: %v", err)
	}
	cert, err := ca.ServerCertificate([]string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Fatalf("server cert does not verify for %s: %v", host, err)
		}
	}
	// Same hosts: the same certificate is kept; a new host: a new one.
	same, _ := ca.ServerCertificate([]string{"localhost"})
	if string(same.Certificate[0]) != string(cert.Certificate[0]) {
		t.Fatal("certificate reissued although it covers the hosts")
	}
	more, _ := ca.ServerCertificate([]string{"127.0.0.1", "berth.example"})
	leaf2, _ := x509.ParseCertificate(more.Certificate[0])
	if _, err := leaf2.Verify(x509.VerifyOptions{Roots: pool, DNSName: "berth.example"}); err != nil {
		t.Fatalf("reissued certificate does not cover the new host: %v", err)
	}
	// A certificate from another CA is not trusted.
	other, _ := LoadOrCreateCA(t.TempDir(), "other")
	opool := x509.NewCertPool()
	opool.AddCert(other.Cert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: opool, DNSName: "localhost"}); err == nil {
		t.Fatal("verified against the wrong CA")
	}
}

func TestToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "admin.token")
	tok, err := LoadOrCreateToken(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	again, _ := LoadOrCreateToken(path)
	if again != tok || len(tok) < 40 {
		t.Fatalf("token %q then %q", tok, again)
	}
	m := NewTokenMatcher(tok)
	if !m.Match(tok) || m.Match(tok+"x") || m.Match("") || m.Match(NewToken()) {
		t.Fatal("token matcher")
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateToken(path); err == nil {
		t.Fatal("a too-short token was accepted")
	}
}
