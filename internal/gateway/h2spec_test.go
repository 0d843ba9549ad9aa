package gateway

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/pki"
)

// TestH2Spec runs h2spec (github.com/summerwind/h2spec, the HTTP/2
// conformance suite) against both entrypoints when it is installed (in
// PATH, or at $H2SPEC):
//
//	go install github.com/summerwind/h2spec/cmd/h2spec@latest
//
// Over TLS every case must pass. Over h2c with prior knowledge the one case
// that may fail is "invalid connection preface": on a port that serves
// HTTP/1 too, bytes that are not the preface are an HTTP/1 request, and
// get an HTTP/1 answer (400), not a bare close.
func TestH2Spec(t *testing.T) {
	bin := os.Getenv("H2SPEC")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("h2spec"); err != nil {
			t.Skip("h2spec is not installed (go install github.com/summerwind/h2spec/cmd/h2spec@latest)")
		}
	}
	ca, _ := pki.NewGatewayCA("ca")
	g := newGateway(t, func(o *Options) { o.IssueCert = func(n string) (*tls.Certificate, error) { return ca.Issue(n) } })
	a := httpBackend(t, "a")
	mustUpdate(t, g, Config{Routes: []Route{{Service: "a", Path: "/", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}}})
	summary := regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)
	for _, tc := range []struct {
		name    string
		addr    net.Addr
		args    []string
		mayFail []string
	}{
		{"h2 over TLS", g.HTTPSAddr(), []string{"-t", "-k"}, nil},
		{"h2c", g.HTTPAddr(), nil, []string{"Sends invalid connection preface"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, port, _ := net.SplitHostPort(tc.addr.String())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			args := append([]string{"-h", host, "-p", port, "-o", "5"}, tc.args...)
			out, _ := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			m := summary.FindStringSubmatch(string(out))
			if m == nil {
				t.Fatalf("h2spec %s: no summary in its output:\n%s", strings.Join(args, " "), out)
			}
			t.Logf("h2spec %s: %s", strings.Join(args, " "), m[0])
			// The failures are listed again after the run, each as
			// "× N: description".
			_, failures, _ := strings.Cut(string(out), "Failures: \n")
			for _, line := range strings.Split(failures, "\n") {
				line = strings.TrimSpace(line)
				if !strings.HasPrefix(line, "×") {
					continue
				}
				allowed := false
				for _, d := range tc.mayFail {
					allowed = allowed || strings.HasSuffix(line, d)
				}
				if !allowed {
					t.Errorf("h2spec case failed: %s", line)
				}
			}
			if m[4] != "0" && t.Failed() {
				t.Logf("h2spec output:\n%s", failures)
			}
		})
	}
}
