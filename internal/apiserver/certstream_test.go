package apiserver

import (
	"context"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// The first certificate change after a quiet spell goes out at once, like
// the assignments and endpoints streams: the debounce window only batches
// the changes that follow it (the stream used to hold every first change
// back for the whole window).
func TestGatewayCertificatesStreamSendsFirstChangeAtOnce(t *testing.T) {
	const window = 5 * time.Second
	f := newFixtureWith(t, func(c *Config) {
		c.Now = func() time.Time { return certNow }
		c.AssignmentDebounce = window
	})
	_, next := watchCertificates(t, f)
	if m := next(); len(m.Certificates) != 0 {
		t.Fatalf("first message: %+v", m)
	}
	// Nothing has changed since the full set went out: the upload below is
	// the first change of a quiet spell.
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, leafOpts{names: []string{"a.test"}})
	start := time.Now()
	if code, body := f.putCert("a", api.CertificateUpload{CertPEM: certPEM, KeyPEM: keyPEM}); code != 201 {
		t.Fatalf("upload: %d %s", code, body)
	}
	m := next()
	took := time.Since(start)
	if len(m.Certificates) != 1 || m.Certificates[0].Name != "a" {
		t.Fatalf("after upload: %v", m.Certificates)
	}
	t.Logf("first change reached the stream in %v (window %v)", took, window)
	if took > window/2 {
		t.Fatalf("first change after a quiet spell took %v, want well under the %v window", took, window)
	}
}

// watchCertificates opens the agents' certificate stream on f; next returns
// its next message, failing the test if none comes within 30 s.
func watchCertificates(t *testing.T, f *fixture) (*api.Client, func() api.GatewayCertificates) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	c, err := api.NewClient(api.ClientConfig{Addr: f.srv.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.WatchGatewayCertificates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c, func() api.GatewayCertificates {
		t.Helper()
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatal("stream closed")
			}
			return m
		case <-ctx.Done():
			t.Fatal("no message")
		}
		return api.GatewayCertificates{}
	}
}
