package manager

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-project/berth/internal/pki"
)

// serveWithCA serves 200 over TLS with a certificate of ca, its chain
// holding the CA when withCA.
func serveWithCA(t *testing.T, ca *pki.CA, withCA bool) *httptest.Server {
	t.Helper()
	cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if withCA {
		cert.Certificate = append(cert.Certificate, ca.Cert.Raw)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"version":"x","leader":true}`))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestPinnedClientTrustsOnlyTheTokensCA(t *testing.T) {
	t.Parallel()
	good, err := pki.LoadOrCreateCA(t.TempDir(), "good")
	if err != nil {
		t.Fatal(err)
	}
	evil, err := pki.LoadOrCreateCA(t.TempDir(), "evil")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		ca     *pki.CA
		withCA bool
		want   string // "" = trusted
	}{
		{"the token's CA", good, true, ""},
		{"another CA", evil, true, "presents CA " + evil.Digest() + ", the token expects " + good.Digest()},
		{"no CA in the chain", good, false, "presents no CA certificate"},
	} {
		srv := serveWithCA(t, tc.ca, tc.withCA)
		c, err := pinnedClient(srv.URL, good.Digest())
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Info(ctx)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

func TestJoinRefusesAWorkerTokenBeforeCallingOut(t *testing.T) {
	t.Parallel()
	ca, err := pki.LoadOrCreateCA(t.TempDir(), "c")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := pki.NewJoinToken(ca, pki.RoleWorker)
	if err != nil {
		t.Fatal(err)
	}
	// The URL answers nothing: the token must be refused before any call.
	_, err = join(context.Background(), JoinConfig{URL: "https://127.0.0.1:1", Token: tok}, t.TempDir(), "m", "https://127.0.0.1:2", "")
	if err == nil || !strings.Contains(err.Error(), "worker token") {
		t.Fatalf("got %v", err)
	}
}
