package gateway

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/pki"
)

// TestTLSIntermediateCipherSuites: the HTTPS entrypoint offers Mozilla's
// "intermediate" TLS 1.2 suites (ECDHE with AES-GCM or ChaCha20) and
// refuses the CBC ones.
func TestTLSIntermediateCipherSuites(t *testing.T) {
	t.Parallel()
	ca, _ := pki.NewGatewayCA("ca")
	g := newGateway(t, func(o *Options) { o.IssueCert = func(n string) (*tls.Certificate, error) { return ca.Issue(n) } })
	mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Host: "a.test", Backends: []Backend{{ID: "a", Addr: "127.0.0.1:1"}}}}})
	dial := func(suite uint16) error {
		conn, err := tls.Dial("tcp", g.HTTPSAddr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "a.test",
			MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}})
		if err == nil {
			conn.Close()
		}
		return err
	}
	for _, s := range []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	} {
		if err := dial(s); err != nil {
			t.Errorf("%s refused: %v", tls.CipherSuiteName(s), err)
		}
	}
	for _, s := range []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
	} {
		if err := dial(s); err == nil {
			t.Errorf("%s accepted", tls.CipherSuiteName(s))
		}
	}
}

// TestTLSDefaultCertificate: a client that sends no SNI, or a name the
// gateway has no certificate for, completes the handshake with the
// gateway's default certificate (a name that can match no real host) and
// gets the gateway's answer — not an internal_error alert.
func TestTLSDefaultCertificate(t *testing.T) {
	t.Parallel()
	ca, _ := pki.NewGatewayCA("ca")
	g := newGateway(t, func(o *Options) { o.IssueCert = func(n string) (*tls.Certificate, error) { return ca.Issue(n) } })
	mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Host: "a.test", Backends: []Backend{{ID: "a", Addr: "127.0.0.1:1"}}}}})
	for _, name := range []string{"", "unknown.test"} {
		conn, err := tls.Dial("tcp", g.HTTPSAddr().String(), &tls.Config{ServerName: name, InsecureSkipVerify: true,
			NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatalf("SNI %q: handshake: %v", name, err)
		}
		leaf := conn.ConnectionState().PeerCertificates[0]
		if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != DefaultCertName {
			t.Errorf("SNI %q: certificate for %v, want %s", name, leaf.DNSNames, DefaultCertName)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: unknown.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("SNI %q: %v", name, err)
		}
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != 404 {
			t.Errorf("SNI %q: status %d, want 404", name, resp.StatusCode)
		}
	}
	// A verifying client is told why it cannot trust it.
	_, err := tls.Dial("tcp", g.HTTPSAddr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "unknown.test"})
	var verr *tls.CertificateVerificationError
	if !errors.As(err, &verr) {
		t.Errorf("verifying client: %v, want a certificate verification error", err)
	}
}

// frozenCache keeps the first session ticket it is given and never
// another, so a test can try to resume with an old ticket.
type frozenCache struct {
	mu sync.Mutex
	cs *tls.ClientSessionState
}

func (c *frozenCache) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cs, c.cs != nil
}

func (c *frozenCache) Put(_ string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cs == nil && cs != nil {
		c.cs = cs
	}
}

// resumes connects with cache, makes a request (so that TLS 1.3 tickets
// arrive) and reports whether the session was resumed.
func resumes(t *testing.T, addr string, ca *pki.GatewayCA, version uint16, cache tls.ClientSessionCache) bool {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "a.test", MinVersion: version,
		MaxVersion: version, ClientSessionCache: cache, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return conn.ConnectionState().DidResume
}

// TestTLSSessionTicketKeyRotation: session tickets survive one rotation of
// the ticket keys and not two, and the keys rotate by themselves every
// TicketKeyRotation (crypto/tls's own keys would last a week).
func TestTLSSessionTicketKeyRotation(t *testing.T) {
	t.Parallel()
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(strings.ReplaceAll(tls.VersionName(v), " ", ""), func(t *testing.T) {
			ca, _ := pki.NewGatewayCA("ca")
			g := newGateway(t, func(o *Options) { o.IssueCert = func(n string) (*tls.Certificate, error) { return ca.Issue(n) } })
			mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Host: "a.test", Backends: []Backend{{ID: "a", Addr: "127.0.0.1:1"}}}}})
			addr := g.HTTPSAddr().String()
			cache := &frozenCache{}
			if resumes(t, addr, ca, v, cache) {
				t.Fatal("the first connection resumed")
			}
			if !resumes(t, addr, ca, v, cache) {
				t.Fatal("no resumption with a fresh ticket")
			}
			if err := g.https.keys.rotate(); err != nil {
				t.Fatal(err)
			}
			if !resumes(t, addr, ca, v, cache) {
				t.Fatal("a ticket from before one rotation no longer resumes")
			}
			if err := g.https.keys.rotate(); err != nil {
				t.Fatal(err)
			}
			if resumes(t, addr, ca, v, cache) {
				t.Fatal("a ticket from before two rotations still resumes")
			}
		})
	}
	t.Run("timer", func(t *testing.T) {
		ca, _ := pki.NewGatewayCA("ca")
		g := newGateway(t, func(o *Options) {
			o.IssueCert = func(n string) (*tls.Certificate, error) { return ca.Issue(n) }
			o.TicketKeyRotation = 200 * time.Millisecond
		})
		mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Host: "a.test", Backends: []Backend{{ID: "a", Addr: "127.0.0.1:1"}}}}})
		cache := &frozenCache{}
		resumes(t, g.HTTPSAddr().String(), ca, tls.VersionTLS13, cache)
		eventually(t, 10*time.Second, "an old ticket to stop resuming", func() bool {
			return !resumes(t, g.HTTPSAddr().String(), ca, tls.VersionTLS13, cache)
		})
	})
}
