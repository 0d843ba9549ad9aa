package pki

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func pinnedServer(t *testing.T, ca *CA, withCA bool) *httptest.Server {
	t.Helper()
	cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if withCA {
		cert = WithCA(cert, ca)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func getPinned(srv *httptest.Server, digest string) error {
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: PinnedTLSConfig(digest)}}
	resp, err := hc.Get(srv.URL)
	if err == nil {
		resp.Body.Close()
	}
	return err
}

func TestPinnedTLSConfig(t *testing.T) {
	ca, other := testCA(t), testCA(t)
	good := pinnedServer(t, ca, true)
	if err := getPinned(good, ca.Digest()); err != nil {
		t.Fatalf("the pinned CA's server refused: %v", err)
	}
	// A server of another CA (a man in the middle): refused, naming both.
	mitm := pinnedServer(t, other, true)
	err := getPinned(mitm, ca.Digest())
	var pe *CAPinError
	if !errors.As(err, &pe) || !errors.Is(err, ErrCAPin) || pe.Presented != other.Digest() || pe.Expected != ca.Digest() {
		t.Fatalf("wrong CA: %v", err)
	}
	if !strings.Contains(err.Error(), "presents CA "+other.Digest()+", the token expects "+ca.Digest()) {
		t.Fatalf("message: %v", err)
	}
	// A server that sends only its leaf cannot be pinned.
	if err := getPinned(pinnedServer(t, ca, false), ca.Digest()); !errors.Is(err, ErrCAPin) {
		t.Fatalf("leaf only: %v", err)
	}
	// The pinned CA in the chain does not help a leaf it did not sign.
	cert, _ := other.ServerCertificate([]string{"127.0.0.1"})
	cert.Certificate = append(cert.Certificate, ca.Cert.Raw)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	if err := getPinned(srv, ca.Digest()); !errors.Is(err, ErrCAPin) {
		t.Fatalf("foreign leaf with the pinned CA appended: %v", err)
	}
}
