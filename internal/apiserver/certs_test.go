package apiserver

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
)

// certNow is the clock of the certificate tests. It is near the real time
// because the gateway CA (pki.NewGatewayCA) is dated by the real clock.
var certNow = time.Now().UTC().Truncate(time.Second)

// newCertFixture is a fixture whose server's clock reads certNow.
func newCertFixture(t *testing.T) *fixture {
	t.Helper()
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := httptest.NewServer(New(Config{Store: st, Token: testToken, Version: "test",
		Now: func() time.Time { return certNow }}).Handler())
	t.Cleanup(srv.Close)
	return &fixture{t: t, st: st, srv: srv}
}

// testCA is a CA that makes test certificates.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: certNow.Add(-time.Hour * 24 * 365), NotAfter: certNow.Add(time.Hour * 24 * 365),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// leafOpts shape a test leaf certificate.
type leafOpts struct {
	names     []string
	notBefore time.Time
	notAfter  time.Time
	key       crypto.Signer // default: a new P-256 key
	isCA      bool
}

// issue returns a leaf certificate PEM (followed by the CA's) and its key PEM.
func (ca *testCA) issue(t *testing.T, o leafOpts) (certPEM, keyPEM string) {
	t.Helper()
	if o.key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		o.key = k
	}
	if o.notBefore.IsZero() {
		o.notBefore = certNow.Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = certNow.Add(30 * 24 * time.Hour)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "leaf"}, DNSNames: o.names,
		NotBefore: o.notBefore, NotAfter: o.notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: o.isCA, BasicConstraintsValid: o.isCA}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, o.key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(o.key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
	return certPEM, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

func (f *fixture) putCert(name string, up api.CertificateUpload) (int, []byte) {
	f.t.Helper()
	b, _ := json.Marshal(up)
	resp, body := f.do("PUT", "/api/v1/certificates/"+name, "application/json", testToken, b)
	return resp.StatusCode, body
}

func TestUploadCertificateRejectsBadInput(t *testing.T) {
	f := newCertFixture(t)
	ca := newTestCA(t)
	good, goodKey := ca.issue(t, leafOpts{names: []string{"shop.example.test"}})
	_, otherKey := ca.issue(t, leafOpts{names: []string{"shop.example.test"}})
	expired, expiredKey := ca.issue(t, leafOpts{names: []string{"a.test"}, notBefore: certNow.Add(-48 * time.Hour), notAfter: certNow.Add(-time.Hour)})
	early, earlyKey := ca.issue(t, leafOpts{names: []string{"a.test"}, notBefore: certNow.Add(time.Hour)})
	noSAN, noSANKey := ca.issue(t, leafOpts{})
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakCert, weakKey := ca.issue(t, leafOpts{names: []string{"a.test"}, key: weak})
	caLeaf, caLeafKey := ca.issue(t, leafOpts{names: []string{"a.test"}, isCA: true})
	// Many copies of the CA certificate after the leaf: over the limit, but
	// under the request body limit.
	big := good + strings.Repeat(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})), 200)
	if len(big) < api.MaxCertificateBytes || len(big) > MaxBodyBytes/2 {
		t.Fatalf("oversize test input is %d bytes", len(big))
	}
	// Keep one stored certificate, to prove that a refused replacement
	// leaves it as it was.
	if code, body := f.putCert("kept", api.CertificateUpload{CertPEM: good, KeyPEM: goodKey}); code != 201 {
		t.Fatalf("good upload: %d %s", code, body)
	}
	for _, c := range []struct {
		name, cert, key string
		field, words    string
	}{
		{"mismatched-key", good, otherKey, "key_pem", "does not match"},
		{"expired", expired, expiredKey, "cert_pem", "expired"},
		{"not-yet-valid", early, earlyKey, "cert_pem", "not valid before"},
		{"garbage-cert", "hello", goodKey, "cert_pem", "no PEM certificate"},
		{"garbage-key", good, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "key_pem", "does not parse"},
		{"no-key", good, "", "key_pem", "no PEM private key"},
		{"key-in-cert", good + goodKey, goodKey, "cert_pem", "PRIVATE KEY"},
		{"no-dns-san", noSAN, noSANKey, "cert_pem", "no DNS names"},
		{"weak-rsa", weakCert, weakKey, "cert_pem", "1024 bits"},
		{"ca-first", caLeaf, caLeafKey, "cert_pem", "is a CA"},
		{"oversize", big, goodKey, "cert_pem", "at most"},
		{"kept", expired, expiredKey, "cert_pem", "expired"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := f.snapshot()
			code, body := f.putCert(c.name, api.CertificateUpload{CertPEM: c.cert, KeyPEM: c.key})
			var e api.Error
			_ = json.Unmarshal(body, &e)
			if code != 400 || e.Field != c.field || e.Code != api.CodeInvalid || !strings.Contains(e.Message, c.words) {
				t.Errorf("got %d %s, want 400 on %s saying %q", code, body, c.field, c.words)
			}
			if strings.Contains(string(body), keyBody(goodKey)) || strings.Contains(string(body), keyBody(c.key)) {
				t.Errorf("the error quotes key material: %s", body)
			}
			if f.snapshot() != before {
				t.Errorf("a refused upload changed the store")
			}
		})
	}
	code, body := f.putCert("Bad_Name", api.CertificateUpload{CertPEM: good, KeyPEM: goodKey})
	if code != 400 || !strings.Contains(string(body), `"field": "name"`) {
		t.Errorf("bad name: %d %s", code, body)
	}
}

// keyBody is a piece of a PEM key's base64 text, to look for leaks.
func keyBody(keyPEM string) string {
	lines := strings.Split(keyPEM, "\n")
	if len(lines) < 2 || len(lines[1]) < 32 {
		return "\x00no key body"
	}
	return lines[1][:32]
}

func TestCertificatesCRUDNeverShowKeys(t *testing.T) {
	f := newCertFixture(t)
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, leafOpts{names: []string{"Shop.Example.test", "*.shop.example.test"}})
	if code, body := f.putCert("shop", api.CertificateUpload{CertPEM: certPEM, KeyPEM: keyPEM}); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	block, _ := pem.Decode([]byte(certPEM))
	sum := sha256.Sum256(block.Bytes)
	for _, path := range []string{"/api/v1/certificates", "/api/v1/certificates/shop"} {
		resp, body := f.do("GET", path, "", testToken, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		if strings.Contains(string(body), "PRIVATE KEY") || strings.Contains(string(body), keyBody(keyPEM)) || strings.Contains(string(body), "key_pem") {
			t.Errorf("%s shows key material: %s", path, body)
		}
		var c api.Certificate
		if path == "/api/v1/certificates" {
			var list []api.Certificate
			if err := json.Unmarshal(body, &list); err != nil || len(list) != 1 {
				t.Fatalf("list: %s %v", body, err)
			}
			c = list[0]
		} else if err := json.Unmarshal(body, &c); err != nil {
			t.Fatal(err)
		}
		if c.Name != "shop" || c.SHA256 != hex.EncodeToString(sum[:]) || strings.Join(c.DNSNames, ",") != "shop.example.test,*.shop.example.test" ||
			!strings.Contains(c.Issuer, "test CA") || !c.Created.Equal(certNow) {
			t.Errorf("%s: %+v", path, c)
		}
	}
	// A replacement keeps the creation time and answers 200.
	certPEM2, keyPEM2 := ca.issue(t, leafOpts{names: []string{"shop.example.test"}})
	if code, body := f.putCert("shop", api.CertificateUpload{CertPEM: certPEM2, KeyPEM: keyPEM2}); code != 200 {
		t.Fatalf("replace: %d %s", code, body)
	}
	rec, err := f.st.Certificates.Get(context.Background(), "shop")
	if err != nil || rec.KeyPEM != keyPEM2 || !rec.Created.Equal(certNow) {
		t.Fatalf("stored after replace: %v %v", rec.Created, err)
	}
	if resp, body := f.do("DELETE", "/api/v1/certificates/shop", "", testToken, nil); resp.StatusCode != 204 {
		t.Fatalf("delete: %d %s", resp.StatusCode, body)
	}
	for _, m := range []string{"GET", "DELETE"} {
		if resp, body := f.do(m, "/api/v1/certificates/shop", "", testToken, nil); resp.StatusCode != 404 {
			t.Errorf("%s after delete: %d %s", m, resp.StatusCode, body)
		}
	}
	if resp, _ := f.do("GET", "/api/v1/certificates", "", "", nil); resp.StatusCode != 401 {
		t.Errorf("list without a token: %d", resp.StatusCode)
	}
}

// csrFor returns a PEM certificate request for names.
func csrFor(t *testing.T, names ...string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: names}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestGatewayCSRSignsOnlyRouteHosts(t *testing.T) {
	f := newCertFixture(t)
	spec := "task:\n  command: [x]\n  ports: [{name: http}]\nroutes: [{host: Shop.Example.test, port: http}, {host: '*.wild.test', port: http}, {port: http, path: /any}]\n"
	if resp, body := f.do("PUT", "/api/v1/services/web", "application/yaml", testToken, []byte(spec)); resp.StatusCode != 201 {
		t.Fatalf("deploy: %d %s", resp.StatusCode, body)
	}
	resp, caPEM := f.do("GET", "/api/v1/gateway/ca", "", testToken, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("gateway CA: %d %s", resp.StatusCode, caPEM)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("gateway CA is not PEM: %s", caPEM)
	}
	for _, c := range []struct {
		names []string
		code  int
	}{
		{[]string{"shop.example.test"}, 200},
		{[]string{"SHOP.example.test"}, 200},
		{[]string{"*.wild.test"}, 200},
		{[]string{"a.wild.test"}, 403},                 // the wildcard allows the wildcard name only
		{[]string{"evil.test"}, 403},                   // no route
		{[]string{"shop.example.test", "x.test"}, 403}, // every name must be a route host
	} {
		resp, body := f.do("POST", "/api/v1/agent/gateway/certificates", "application/x-pem-file", testToken, csrFor(t, c.names...))
		if resp.StatusCode != c.code {
			t.Errorf("%v: %d %s, want %d", c.names, resp.StatusCode, body, c.code)
			continue
		}
		if c.code != 200 {
			var e api.Error
			if err := json.Unmarshal(body, &e); err != nil || e.Code != api.CodeForbidden || !strings.Contains(e.Message, "not the host of any") {
				t.Errorf("%v: error %s", c.names, body)
			}
			continue
		}
		block, _ := pem.Decode(body)
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		host := strings.Replace(strings.ToLower(c.names[0]), "*", "x", 1)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host, CurrentTime: certNow}); err != nil {
			t.Errorf("%v: the signed certificate does not verify for %s against the gateway CA: %v", c.names, host, err)
		}
		if leaf.NotAfter.Sub(certNow) < 80*24*time.Hour {
			t.Errorf("%v: lasts only until %v", c.names, leaf.NotAfter)
		}
	}
	for _, body := range [][]byte{[]byte("garbage"), []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")} {
		resp, out := f.do("POST", "/api/v1/agent/gateway/certificates", "application/x-pem-file", testToken, body)
		if resp.StatusCode != 400 || !strings.Contains(string(out), `"field": "csr"`) {
			t.Errorf("%q: %d %s", body, resp.StatusCode, out)
		}
	}
}

// Two managers (servers on one store) asked for the gateway CA at once, for
// the first time, agree on one.
func TestGatewayCACreatedOnce(t *testing.T) {
	f := newCertFixture(t)
	other := httptest.NewServer(New(Config{Store: f.st, Token: testToken}).Handler())
	defer other.Close()
	urls := []string{f.srv.URL, other.URL}
	const n = 8
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", urls[i%2]+"/api/v1/gateway/ca", nil)
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var b strings.Builder
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				b.WriteString(sc.Text() + "\n")
			}
			if resp.StatusCode != 200 {
				t.Errorf("status %d: %s", resp.StatusCode, b.String())
			}
			got[i] = b.String()
		})
	}
	wg.Wait()
	for i := range got {
		if got[i] == "" || got[i] != got[0] {
			t.Fatalf("call %d got another CA:\n%s\nvs\n%s", i, got[i], got[0])
		}
	}
	rec, err := f.st.GatewayCA(context.Background(), nil)
	if err != nil || rec.CertPEM != got[0] {
		t.Fatalf("stored CA differs: %v", err)
	}
	// It is not the API's CA (there is none in this test) and has a key of
	// its own, kept in the store.
	if !strings.Contains(rec.KeyPEM, "PRIVATE KEY") {
		t.Fatalf("no key stored")
	}
}

// Agents get every certificate with its key, again after every change.
func TestGatewayCertificatesStream(t *testing.T) {
	f := newCertFixture(t)
	c, next := watchCertificates(t, f)
	ctx := t.Context()
	if m := next(); len(m.Certificates) != 0 {
		t.Fatalf("first message: %+v", m)
	}
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, leafOpts{names: []string{"a.test"}})
	if code, body := f.putCert("a", api.CertificateUpload{CertPEM: certPEM, KeyPEM: keyPEM}); code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	m := next()
	if len(m.Certificates) != 1 || m.Certificates[0].Name != "a" || m.Certificates[0].KeyPEM != keyPEM || m.Certificates[0].CertPEM != certPEM {
		t.Fatalf("after upload: %v", m.Certificates)
	}
	if err := c.RemoveCertificate(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if m := next(); len(m.Certificates) != 0 {
		t.Fatalf("after delete: %v", m.Certificates)
	}
}
