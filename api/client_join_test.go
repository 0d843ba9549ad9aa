package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func serverCAPEM(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// deadAddr returns an https address nothing listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "https://" + addr
}

func TestClientFailsOverToTheNextAddress(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Method == http.MethodPost {
			var rep StatusReport
			if err := json.NewDecoder(r.Body).Decode(&rep); err != nil || len(rep.Tasks) != 1 {
				http.Error(w, "body lost on failover", 400)
				return
			}
			w.WriteHeader(204)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"version":"v","leader":true}`))
	}))
	defer srv.Close()
	dead := deadAddr(t)
	c, err := NewClient(ClientConfig{Addrs: []string{dead, srv.URL}, CACertPEM: serverCAPEM(srv)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Info(ctx); err != nil {
		t.Fatalf("Info with a dead first address: %v", err)
	}
	if !strings.HasPrefix(c.Addr(), srv.URL) {
		t.Fatalf("Addr() = %s, want the one that answered (%s)", c.Addr(), srv.URL)
	}
	// A POST that could not connect is sent again, body and all.
	if err := c.SetAddrs([]string{dead, srv.URL}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.Addrs()[0], srv.URL) {
		t.Fatalf("SetAddrs forgot the address that answered: %v", c.Addrs())
	}
	c2, _ := NewClient(ClientConfig{Addr: dead, Addrs: []string{srv.URL}, CACertPEM: serverCAPEM(srv)})
	if err := c2.ReportStatus(ctx, "n1", StatusReport{Tasks: []TaskStatusUpdate{{ID: "t1"}}}); err != nil {
		t.Fatalf("POST after failover: %v", err)
	}
	// An HTTP error is an answer: no failover.
	errSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(403)
		_, _ = w.Write([]byte(`{"code":"forbidden","message":"no"}`))
	}))
	defer errSrv.Close()
	pool := append(serverCAPEM(srv), serverCAPEM(errSrv)...)
	before := hits.Load()
	c3, _ := NewClient(ClientConfig{Addrs: []string{errSrv.URL, srv.URL}, CACertPEM: pool})
	var ae *Error
	if _, err := c3.Info(ctx); !errors.As(err, &ae) || ae.Status != 403 || hits.Load() != before {
		t.Fatalf("a 403 should end the request there: %v (other server hit %d times)", err, hits.Load()-before)
	}
	// Every address dead: one error naming them.
	c4, _ := NewClient(ClientConfig{Addrs: []string{dead, deadAddr(t)}, CACertPEM: serverCAPEM(srv)})
	if _, err := c4.Info(ctx); err == nil || !strings.Contains(err.Error(), "no manager answered") {
		t.Fatalf("all dead: %v", err)
	}
}

func TestClientPresentsItsCertificate(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "node-1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "no certificate", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Info{Version: r.TLS.VerifiedChains[0][0].Subject.CommonName})
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv.StartTLS()
	defer srv.Close()
	cert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for name, cfg := range map[string]ClientConfig{
		"Certificate":    {Addr: srv.URL, CACertPEM: serverCAPEM(srv), Certificate: cert},
		"GetCertificate": {Addr: srv.URL, CACertPEM: serverCAPEM(srv), GetCertificate: func() (*tls.Certificate, error) { return cert, nil }},
	} {
		c, err := NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		if err != nil || info.Version != "node-1" {
			t.Fatalf("%s: %+v %v", name, info, err)
		}
	}
	if _, err := NewClient(ClientConfig{Addr: "http://127.0.0.1:1", Certificate: cert}); !errors.Is(err, ErrClientConfig) {
		t.Fatalf("certificate over http: %v", err)
	}
}

// A manager that answers 503 (no quorum, shutting down) is passed over for
// an idempotent request, never for a POST, which it may have applied.
func TestClientFailsOverPastAnUnavailableManager(t *testing.T) {
	var posts atomic.Int32
	down := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		_, _ = w.Write([]byte(`{"code":"unavailable","message":"request cancelled or timed out"}`))
	}))
	defer down.Close()
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			posts.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"version":"up","leader":true}`))
	}))
	defer up.Close()
	c, err := NewClient(ClientConfig{Addrs: []string{down.URL, up.URL}, CACertPEM: append(serverCAPEM(down), serverCAPEM(up)...)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if info, err := c.Info(ctx); err != nil || info.Version != "up" {
		t.Fatalf("GET past a 503: %+v %v", info, err)
	}
	if !strings.HasPrefix(c.Addr(), up.URL) {
		t.Fatalf("Addr() = %s, want %s", c.Addr(), up.URL)
	}
	c2, _ := NewClient(ClientConfig{Addrs: []string{down.URL, up.URL}, CACertPEM: append(serverCAPEM(down), serverCAPEM(up)...)})
	var ae *Error
	if err := c2.ReportStatus(ctx, "n1", StatusReport{}); !errors.As(err, &ae) || ae.Status != 503 || posts.Load() != 0 {
		t.Fatalf("a POST answered 503 must not be sent again: %v (posts %d)", err, posts.Load())
	}
}

// TestTasksFollowsPages: Client.Tasks reads every page of a paged listing.
func TestTasksFollowsPages(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("all") != "true" || r.URL.Query().Get("node") != "n1" {
			w.WriteHeader(400)
			return
		}
		if r.URL.Query().Get("continue") == "" {
			w.Header().Set("Berth-Continue", "p2")
			_, _ = w.Write([]byte(`[{"id":"t1"}]`))
			return
		}
		_, _ = w.Write([]byte(`[{"id":"t2"}]`))
	}))
	defer srv.Close()
	c, _ := NewClient(ClientConfig{Addr: srv.URL, CACertPEM: serverCAPEM(srv)})
	ts, err := c.Tasks(t.Context(), TaskQuery{Node: "n1", All: true})
	if err != nil || len(ts) != 2 || ts[0].ID != "t1" || ts[1].ID != "t2" {
		t.Fatalf("%+v %v", ts, err)
	}
}
