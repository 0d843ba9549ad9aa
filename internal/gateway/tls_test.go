package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/pki"
)

// tlsClient trusts only pool and asks for serverName.
func tlsClient(pool *x509.CertPool, serverName string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: serverName},
			ForceAttemptHTTP2: true,
		},
	}
}

// TestTLSGatewayCAAndHTTP2: a client that verifies the gateway CA reaches a
// route over HTTPS with HTTP/2; HSTS is added over HTTPS; the HTTP
// entrypoint redirects.
func TestTLSGatewayCAAndHTTP2(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewGatewayCA("test gateway CA")
	if err != nil {
		t.Fatal(err)
	}
	var issued atomic.Int64
	g := newGateway(t, func(o *Options) {
		o.IssueCert = func(name string) (*tls.Certificate, error) {
			issued.Add(1)
			return ca.Issue(name)
		}
	})
	a := httpBackend(t, "a")
	mustUpdate(t, g, Config{Routes: []Route{{Service: "app", Host: "app.example.test", Path: "/",
		RedirectHTTPS: true, HSTS: true, Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}})

	c := tlsClient(ca.Pool(), "app.example.test")
	url := "https://" + g.HTTPSAddr().String() + "/hello?x=1"
	for i := 0; i < 2; i++ {
		code, e, hdr := get(t, c, url, "app.example.test")
		if code != 200 || e.Name != "a" || e.Path != "/hello" {
			t.Fatalf("HTTPS: %d from %q at %q", code, e.Name, e.Path)
		}
		if e.Header.Get("X-Forwarded-Proto") != "https" {
			t.Errorf("X-Forwarded-Proto %q, want https", e.Header.Get("X-Forwarded-Proto"))
		}
		if hdr.Get("Strict-Transport-Security") == "" {
			t.Error("no HSTS header over HTTPS")
		}
	}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("HTTPS protocol %s, want HTTP/2", resp.Proto)
	}
	if n := issued.Load(); n != 1 {
		t.Errorf("issued %d certificates for one name, want 1 (cached)", n)
	}
	// A name no route has gets no certificate.
	if _, err := tlsClient(ca.Pool(), "evil.test").Get("https://" + g.HTTPSAddr().String() + "/"); err == nil {
		t.Error("handshake for a name without a route succeeded")
	}

	// HTTP → HTTPS redirect, with the query.
	code, _, hdr := get(t, noRedirect(), "http://"+g.HTTPAddr().String()+"/hello?x=1", "app.example.test")
	want := fmt.Sprintf("https://app.example.test:%d/hello?x=1", g.httpsPort)
	if code != http.StatusPermanentRedirect || hdr.Get("Location") != want {
		t.Errorf("redirect %d to %q, want 308 to %q", code, hdr.Get("Location"), want)
	}
	if hdr.Get("Strict-Transport-Security") != "" {
		t.Error("HSTS sent over plain HTTP")
	}
}

// TestTLSUploadedCertBySNI: SNI picks the uploaded certificate; other names
// fall back to the gateway CA.
func TestTLSUploadedCertBySNI(t *testing.T) {
	t.Parallel()
	gwCA, _ := pki.NewGatewayCA("gateway CA")
	userCA, _ := pki.NewGatewayCA("user's own CA")
	now := time.Now()
	certPEM, keyPEM, err := userCA.IssuePEM(now.Add(-time.Hour), now.Add(24*time.Hour), "shop.example.test")
	if err != nil {
		t.Fatal(err)
	}
	wildPEM, wildKey, _ := userCA.IssuePEM(now.Add(-time.Hour), now.Add(24*time.Hour), "*.tenants.test")
	g := newGateway(t, func(o *Options) { o.IssueCert = func(n string) (*tls.Certificate, error) { return gwCA.Issue(n) } })
	a := httpBackend(t, "a")
	be := []Backend{{ID: "a", Addr: hostPort(a)}}
	mustUpdate(t, g, Config{
		Routes: []Route{{Service: "shop", Host: "shop.example.test", Backends: be},
			{Service: "app", Host: "app.example.test", Backends: be},
			{Service: "tenants", Host: "*.tenants.test", Backends: be}},
		Certs: []Cert{{CertPEM: certPEM, KeyPEM: keyPEM}, {Names: []string{"*.tenants.test"}, CertPEM: wildPEM, KeyPEM: wildKey}},
	})
	addr := g.HTTPSAddr().String()
	cases := []struct {
		name   string
		issuer string
	}{
		{"shop.example.test", "user's own CA"},
		{"acme.tenants.test", "user's own CA"},
		{"app.example.test", "gateway CA"},
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(gwCA.CertPEM())
	pool.AppendCertsFromPEM(userCA.CertPEM())
	for _, c := range cases {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: c.name})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		leaf := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		if leaf.Issuer.CommonName != c.issuer {
			t.Errorf("%s: certificate from %q, want %q", c.name, leaf.Issuer.CommonName, c.issuer)
		}
	}
	// TLS 1.1 is refused.
	if conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "shop.example.test", MaxVersion: tls.VersionTLS11}); err == nil {
		conn.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}
}

// TestTLSBadCertsRejected: a key that does not match and an expired
// certificate are rejected with clear errors, and the old certificate stays.
func TestTLSBadCertsRejected(t *testing.T) {
	t.Parallel()
	ca, _ := pki.NewGatewayCA("ca")
	now := time.Now()
	good, goodKey, _ := ca.IssuePEM(now.Add(-time.Hour), now.Add(time.Hour), "shop.example.test")
	other, otherKey, _ := ca.IssuePEM(now.Add(-time.Hour), now.Add(time.Hour), "shop.example.test")
	expired, expiredKey, _ := ca.IssuePEM(now.Add(-48*time.Hour), now.Add(-24*time.Hour), "shop.example.test")
	g := newGateway(t, nil)
	mustUpdate(t, g, Config{Certs: []Cert{{CertPEM: good, KeyPEM: goodKey}}})
	serial := func() string {
		conn, err := tls.Dial("tcp", g.HTTPSAddr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "shop.example.test"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	cases := []struct {
		cert Cert
		want string
	}{
		{Cert{CertPEM: other, KeyPEM: goodKey}, "does not match its key"},
		{Cert{CertPEM: expired, KeyPEM: expiredKey}, "expired"},
		{Cert{Names: []string{"www.example.test"}, CertPEM: other, KeyPEM: otherKey}, `does not cover "www.example.test"`},
		{Cert{CertPEM: []byte("junk"), KeyPEM: goodKey}, "certs[0]"},
	}
	for _, c := range cases {
		err := g.Update(Config{Certs: []Cert{c.cert}})
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err %v, want ErrInvalidConfig saying %q", err, c.want)
		}
		if s := serial(); s != before {
			t.Fatal("the certificate in force changed after a rejected update")
		}
	}
}

// TestTLSHotReload: a new certificate is served to new connections while an
// open connection keeps working.
func TestTLSHotReload(t *testing.T) {
	t.Parallel()
	ca, _ := pki.NewGatewayCA("ca")
	now := time.Now()
	c1, k1, _ := ca.IssuePEM(now.Add(-time.Hour), now.Add(time.Hour), "shop.example.test")
	c2, k2, _ := ca.IssuePEM(now.Add(-time.Hour), now.Add(2*time.Hour), "shop.example.test")
	g := newGateway(t, nil)
	a := httpBackend(t, "a")
	routes := []Route{{Service: "shop", Host: "shop.example.test", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}
	mustUpdate(t, g, Config{Routes: routes, Certs: []Cert{{CertPEM: c1, KeyPEM: k1}}})

	cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "shop.example.test", NextProtos: []string{"http/1.1"}}
	conn, err := tls.Dial("tcp", g.HTTPSAddr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	first := conn.ConnectionState().PeerCertificates[0].SerialNumber
	br := bufio.NewReader(conn)
	ask := func() int {
		t.Helper()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: shop.example.test\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request on the open connection: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if ask() != 200 {
		t.Fatal("first request failed")
	}
	mustUpdate(t, g, Config{Routes: routes, Certs: []Cert{{CertPEM: c2, KeyPEM: k2}}})
	if ask() != 200 {
		t.Fatal("request on the open connection after the reload failed")
	}
	conn2, err := tls.Dial("tcp", g.HTTPSAddr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if second := conn2.ConnectionState().PeerCertificates[0].SerialNumber; second.Cmp(first) == 0 {
		t.Fatal("a new connection still gets the old certificate")
	}
}

// TestHTTP2ConnectionOutlivesHeaderTimeout: an HTTP/2 connection (TLS and
// h2c) handed to net/http keeps working past ReadHeaderTimeout.
func TestHTTP2ConnectionOutlivesHeaderTimeout(t *testing.T) {
	t.Parallel()
	ca, _ := pki.NewGatewayCA("ca")
	g := newGateway(t, func(o *Options) {
		o.ReadHeaderTimeout = 200 * time.Millisecond
		o.IssueCert = func(n string) (*tls.Certificate, error) { return ca.Issue(n) }
	})
	a := httpBackend(t, "a")
	mustUpdate(t, g, Config{Routes: []Route{{Service: "svc", Host: "h2.test", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}})
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	clients := map[string]*http.Client{
		"https://" + g.HTTPSAddr().String(): tlsClient(ca.Pool(), "h2.test"),
		"http://" + g.HTTPAddr().String():   {Transport: &http.Transport{Protocols: &h2c}, Timeout: 5 * time.Second},
	}
	for base, c := range clients {
		var conns atomic.Int64
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			if !info.Reused {
				conns.Add(1)
			}
		}}
		for i := 0; i < 2; i++ {
			if i == 1 {
				time.Sleep(500 * time.Millisecond) // idle past ReadHeaderTimeout on purpose
			}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", base+"/", nil)
			req.Host = "h2.test"
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s request %d: %v", base, i, err)
			}
			resp.Body.Close()
			if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
				t.Fatalf("%s request %d: %s %d", base, i, resp.Proto, resp.StatusCode)
			}
		}
		if n := conns.Load(); n != 1 {
			t.Errorf("%s: %d connections for two requests, want 1 (the first was cut)", base, n)
		}
	}
}
