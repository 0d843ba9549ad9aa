package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/apiserver"
	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
)

// realCluster is the real API server on a real (embedded) store, behind a
// TLS test server, with a data directory that points at it.
func realCluster(t *testing.T) string {
	t.Helper()
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := httptest.NewTLSServer(apiserver.New(apiserver.Config{Store: st, Token: goodToken}).Handler())
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, addrFile), srv.URL+"\n", 0o644)
	writeTestFile(t, filepath.Join(dir, tokenFile), goodToken+"\n", 0o600)
	writeTestFile(t, filepath.Join(dir, caFile), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})), 0o644)
	return dir
}

// writeLeaf writes a certificate for names, valid from notBefore to
// notAfter, and a key (its own unless key is given) into dir.
func writeLeaf(t *testing.T, dir, base string, names []string, notBefore, notAfter time.Time, key *ecdsa.PrivateKey) (certFile, keyFile string, k *ecdsa.PrivateKey) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cli test CA"},
		NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(72 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), DNSNames: names,
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if key == nil {
		key = leafKey
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	writeTestFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	writeTestFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})), 0o600)
	return certFile, keyFile, leafKey
}

func TestCertCommands(t *testing.T) {
	t.Parallel()
	dataDir := realCluster(t)
	run := func(args ...string) cliResult {
		return cliRun(context.Background(), map[string]string{envDataDir: dataDir}, "", args...)
	}
	files := t.TempDir()
	now := time.Now()
	certFile, keyFile, _ := writeLeaf(t, files, "shop", []string{"shop.example.test"}, now.Add(-time.Hour), now.Add(24*time.Hour), nil)
	res := run("cert", "add", "shop", "--cert", certFile, "--key", keyFile)
	if res.code != 0 || !strings.Contains(res.stdout, "certificate shop added: shop.example.test") {
		t.Fatalf("cert add: %+v", res)
	}
	if res := run("cert", "add", "shop", "--cert", certFile, "--key", keyFile); res.code != 0 || !strings.Contains(res.stdout, "replaced") {
		t.Fatalf("cert add again: %+v", res)
	}

	// Refused uploads: one line naming the file, exit 1, nothing stored.
	badCert, badKey, _ := writeLeaf(t, files, "mismatch", []string{"bad.test"}, now.Add(-time.Hour), now.Add(time.Hour), mustKey(t))
	oldCert, oldKey, _ := writeLeaf(t, files, "old", []string{"old.test"}, now.Add(-48*time.Hour), now.Add(-time.Hour), nil)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"cert", "add", "bad", "--cert", badCert, "--key", badKey}, 1, "berth: " + badKey + ": the key does not match the certificate"},
		{[]string{"cert", "add", "old", "--cert", oldCert, "--key", oldKey}, 1, "berth: " + oldCert + ": the certificate"},
		{[]string{"cert", "add", "x", "--cert", certFile}, 2, "berth: cert add needs --cert FILE and --key FILE"},
		{[]string{"cert", "add", "x", "--cert", filepath.Join(files, "none"), "--key", keyFile}, 1, "berth: --cert: open"},
		{[]string{"cert", "inspect", "nope"}, 1, "berth: no certificate named"},
	} {
		res := run(c.args...)
		if res.code != c.code || !strings.HasPrefix(res.stderr, c.want) || strings.Count(res.stderr, "\n") != 1 {
			t.Errorf("%v: %+v, want exit %d and one line starting %q", c.args, res, c.code, c.want)
		}
	}
	if strings.Contains(run("cert", "add", "old", "--cert", oldCert, "--key", oldKey).stderr, "expired") == false {
		t.Errorf("an expired certificate's error does not say so")
	}

	res = run("cert", "ls", "-o", "json")
	var list []api.Certificate
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &list) != nil || len(list) != 1 || list[0].Name != "shop" {
		t.Fatalf("cert ls -o json: %+v", res)
	}
	if strings.Contains(res.stdout, "PRIVATE KEY") || strings.Contains(res.stdout, "key_pem") {
		t.Fatalf("cert ls shows the key: %s", res.stdout)
	}
	if res := run("cert", "ls"); res.code != 0 || !strings.Contains(res.stdout, "shop.example.test") || !strings.HasPrefix(res.stdout, "NAME") {
		t.Fatalf("cert ls: %+v", res)
	}
	if res := run("cert", "inspect", "shop"); res.code != 0 || !strings.Contains(res.stdout, `"sha256": "`+list[0].SHA256) {
		t.Fatalf("cert inspect: %+v", res)
	}
	res = run("cert", "ca")
	if b, _ := pem.Decode([]byte(res.stdout)); res.code != 0 || b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("cert ca: %+v", res)
	}
	if res := run("cert", "rm", "shop"); res.code != 0 {
		t.Fatalf("cert rm: %+v", res)
	}
	if res := run("cert", "ls", "-o", "json"); res.code != 0 || strings.TrimSpace(res.stdout) != "[]" {
		t.Fatalf("cert ls after rm: %+v", res)
	}
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestMeshEntrypointFlags(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		v, bind, want string
		bad           bool
	}{
		{"7480", "127.0.0.1", "127.0.0.1:7480", false},
		{"7481", "0.0.0.0", "0.0.0.0:7481", false},
		{"0", "", "127.0.0.1:0", false},
		{"10.0.0.1:443", "127.0.0.1", "10.0.0.1:443", false},
		{"[::1]:8443", "127.0.0.1", "[::1]:8443", false},
		{"off", "127.0.0.1", "", false},
		{"", "127.0.0.1", "", false},
		{"99999", "127.0.0.1", "", true},
		{"host", "127.0.0.1", "", true},
		{"h:x", "127.0.0.1", "", true},
	} {
		got, err := meshEntrypoint("--mesh-https", c.v, c.bind)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("%q on %q: %q %v", c.v, c.bind, got, err)
		}
	}
	for cmd, mk := range map[string]func() *cobra.Command{"up": newUpCmd, "agent": newAgentCmd} {
		c := mk()
		for flag, def := range map[string]string{"mesh-http": defaultMeshHTTP, "mesh-https": defaultMeshHTTPS} {
			if f := c.Flags().Lookup(flag); f == nil || f.DefValue != def {
				t.Errorf("berth %s --%s: %+v", cmd, flag, f)
			}
		}
	}
}
