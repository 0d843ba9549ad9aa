package pki

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

func TestGatewayCALoadRoundTrip(t *testing.T) {
	ca, err := NewGatewayCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := LoadGatewayCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca2.Issue("x.test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "x.test"}); err != nil {
		t.Fatalf("a certificate from the reloaded CA does not verify: %v", err)
	}
	now := time.Now()
	leafPEM, leafKey, _ := ca.IssuePEM(now, now.Add(time.Hour), "y.test")
	if _, err := LoadGatewayCA(leafPEM, leafKey); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Fatalf("LoadGatewayCA of a leaf certificate: %v", err)
	}
}
