package agent

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowSigner counts signing requests and answers only when released.
type slowSigner struct {
	calls   atomic.Int64
	release chan struct{}
	err     error
}

func (s *slowSigner) SignGatewayCertificate(ctx context.Context, csrPEM []byte) ([]byte, error) {
	s.calls.Add(1)
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return nil, s.err
}

// TestCertIssuerCoalescesAndRemembersFailures checks that many concurrent
// handshakes for a name the gateway has no certificate for yet make one
// signing request, not one each, and that a failed request is not repeated
// by the next handshakes for a while: unauthenticated clients cannot turn
// TLS handshakes into a flood of requests to the manager.
func TestCertIssuerCoalescesAndRemembersFailures(t *testing.T) {
	s := &slowSigner{release: make(chan struct{}), err: errors.New("manager says no")}
	now := time.Now()
	ci := &certIssuer{signer: s, exact: func(string) bool { return true }, now: func() time.Time { return now }}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := ci.issue("shop.example.test")
			errs <- err
		}()
	}
	// Wait until the first request is out and the others queue behind it.
	deadline := time.Now().Add(10 * time.Second)
	for s.calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(s.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil {
			t.Fatal("a handshake got a certificate from a failing signer")
		}
	}
	if n := s.calls.Load(); n != 1 {
		t.Errorf("50 concurrent handshakes made %d signing requests, want 1", n)
	}
	if _, err := ci.issue("shop.example.test"); err == nil || s.calls.Load() != 1 {
		t.Errorf("a handshake right after the failure: err %v, %d requests; want the remembered failure and no new request", err, s.calls.Load())
	}
	now = now.Add(failRetry + time.Second)
	if _, err := ci.issue("shop.example.test"); err == nil || s.calls.Load() != 2 {
		t.Errorf("after %s: err %v, %d requests; want a new request", failRetry, err, s.calls.Load())
	}
}
