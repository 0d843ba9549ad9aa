package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// meshAddrs reads the addresses of the gateway's entrypoints from the data
// directory's mesh.addr, waiting for the agent to write it.
func (b *berth) meshAddrs() (httpAddr, httpsAddr string) {
	b.t.Helper()
	eventually(b.t, 30*time.Second, func() error {
		data, err := os.ReadFile(filepath.Join(b.dataDir, "mesh.addr"))
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, " "); ok {
				switch k {
				case "http":
					httpAddr = v
				case "https":
					httpsAddr = v
				}
			}
		}
		if httpAddr == "" || httpsAddr == "" {
			return fmt.Errorf("mesh.addr holds %q", data)
		}
		return nil
	})
	return httpAddr, httpsAddr
}

// testCertFiles writes a certificate for name from a CA of its own, and a
// key (the certificate's, unless mismatched), into dir; it returns the
// files, the leaf's DER and a pool holding the CA.
func testCertFiles(t *testing.T, dir, name string, notBefore, notAfter time.Time, mismatched bool) (certFile, keyFile string, leaf []byte, pool *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e upload CA"},
		NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(72 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	pool = x509.NewCertPool()
	pool.AddCert(caCert)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err = x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if mismatched {
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, leaf, pool
}

// TestMeshTLS serves a route over HTTPS with a certificate from the gateway
// CA, to a client that trusts only that CA; redirects plain HTTP and sets
// HSTS; serves an uploaded certificate by SNI; refuses bad uploads and TLS
// 1.1.
func TestMeshTLS(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	dir := t.TempDir()
	spec := filepath.Join(dir, "shop.yaml")
	doc := `name: shop
replicas: 1
task:
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports: [{name: http}]
  health:
    http: {port: http, path: /healthz}
    interval: 1s
  resources: {cpus: 0.1, memory: 64MiB}
routes:
  - {host: shop.example.test, port: http, https_redirect: true, hsts: true}
`
	if err := os.WriteFile(spec, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	b := startBerth(t, spec)
	b.waitConverged("shop", 1, deployTimeout)
	httpAddr, httpsAddr := b.meshAddrs()

	caPEM := b.mustCLI("cert", "ca")
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		t.Fatalf("berth cert ca printed no certificate: %q", caPEM)
	}
	apiCA, err := os.ReadFile(filepath.Join(b.dataDir, "ca.pem"))
	if err != nil || bytes.Equal(bytes.TrimSpace(apiCA), bytes.TrimSpace([]byte(caPEM))) {
		t.Fatalf("the gateway CA is the API's CA (or ca.pem is unreadable: %v)", err)
	}
	httpsClient := func(serverName string, roots *x509.CertPool, maxVersion uint16) *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: serverName, RootCAs: roots, MinVersion: tls.VersionTLS10, MaxVersion: maxVersion}}
		return &http.Client{Timeout: 10 * time.Second, Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	get := func(c *http.Client, url, host string) (*http.Response, string, error) {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			return nil, "", err
		}
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, string(body), err
	}

	// HTTPS with a certificate from the gateway CA, verified by the client.
	shop := httpsClient("shop.example.test", pool, 0)
	eventually(t, 20*time.Second, func() error {
		resp, body, err := get(shop, "https://"+httpsAddr+"/", "shop.example.test")
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		if hsts := resp.Header.Get("Strict-Transport-Security"); !strings.Contains(hsts, "max-age=") {
			return fmt.Errorf("no HSTS header (got %q)", hsts)
		}
		if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
			return fmt.Errorf("connection state %+v", resp.TLS)
		}
		return nil
	})

	// Plain HTTP is redirected to HTTPS.
	plain := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, body, err := get(plain, "http://"+httpAddr+"/orders?x=1", "shop.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if loc := resp.Header.Get("Location"); resp.StatusCode/100 != 3 || !strings.HasPrefix(loc, "https://shop.example.test") || !strings.HasSuffix(loc, "/orders?x=1") {
		t.Fatalf("plain HTTP: %d Location %q: %s", resp.StatusCode, loc, body)
	}

	// TLS 1.1 is refused.
	if _, _, err := get(httpsClient("shop.example.test", pool, tls.VersionTLS11), "https://"+httpsAddr+"/", "shop.example.test"); err == nil {
		t.Fatal("a TLS 1.1 client was served")
	}

	// An uploaded certificate is served by SNI once the stream delivers it.
	now := time.Now()
	certFile, keyFile, leaf, uploadPool := testCertFiles(t, dir, "upload.example.test", now.Add(-time.Hour), now.Add(24*time.Hour), false)
	if out := b.mustCLI("cert", "add", "upload", "--cert", certFile, "--key", keyFile); !strings.Contains(out, "added") {
		t.Fatalf("cert add: %q", out)
	}
	want := sha256.Sum256(leaf)
	eventually(t, 10*time.Second, func() error {
		c, err := tls.Dial("tcp", httpsAddr, &tls.Config{ServerName: "upload.example.test", RootCAs: uploadPool})
		if err != nil {
			return err
		}
		defer c.Close()
		if got := sha256.Sum256(c.ConnectionState().PeerCertificates[0].Raw); got != want {
			return fmt.Errorf("served certificate %x, want the uploaded %x", got[:8], want[:8])
		}
		return nil
	})

	// Bad uploads: one line, non-zero exit, nothing stored.
	badCert, badKey, _, _ := testCertFiles(t, dir, "bad.example.test", now.Add(-time.Hour), now.Add(24*time.Hour), true)
	oldCert, oldKey, _, _ := testCertFiles(t, dir, "old.example.test", now.Add(-48*time.Hour), now.Add(-time.Hour), false)
	for _, c := range []struct {
		name, cert, key, words string
	}{
		{"bad", badCert, badKey, "does not match"},
		{"old", oldCert, oldKey, "expired"},
	} {
		res := b.cli(nil, "cert", "add", c.name, "--cert", c.cert, "--key", c.key)
		if res.code == 0 || strings.Count(res.stderr, "\n") != 1 || !strings.Contains(res.stderr, c.words) {
			t.Errorf("cert add %s: %v, want a non-zero exit and one line saying %q", c.name, res, c.words)
		}
	}
	if out := b.mustCLI("cert", "ls"); strings.Contains(out, "bad") || strings.Contains(out, "old") || !strings.Contains(out, "upload") {
		t.Errorf("cert ls after refused uploads:\n%s", out)
	}

	// No key reached the log.
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	keyLine := strings.Split(string(keyPEM), "\n")[1]
	logText, err := os.ReadFile(b.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(logText), "PRIVATE KEY") || strings.Contains(string(logText), keyLine[:32]) {
		t.Errorf("berth up logged key material")
	}
}
