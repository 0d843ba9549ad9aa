package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/store"
)

// finishRebalance plays the orchestrator once a rebalance is asked for: it
// marks the pending request of hello done with msg.
func (c *updCluster) finishRebalance(ctx context.Context, msg string) {
	for ctx.Err() == nil {
		svc, err := c.st.Services.Get(ctx, "hello")
		if err == nil && svc.RebalanceStatus.Pending() {
			st := *svc.RebalanceStatus
			st.Done, st.Message, st.CompletedAt = st.Requested, msg, time.Now()
			svc.RebalanceStatus = &st
			if err := c.st.Services.Update(ctx, &svc); err == nil || !errors.Is(err, store.ErrConflict) {
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestServiceRebalance(t *testing.T) {
	t.Parallel()
	c := newUpdCluster(t)
	if r := c.run("deploy", "-f", c.spec("1", "rebalance: false\nupdate: {parallelism: 2}\n")); r.code != 0 {
		t.Fatalf("deploy: %+v", r)
	}
	r := c.run("service", "rebalance", "hello")
	if r.code != 0 || r.stdout != "service hello: rebalance requested; tasks move start-first, 2 at a time (update.parallelism)\n" || r.stderr != "" {
		t.Fatalf("rebalance: %+v", r)
	}
	svc, err := c.st.Services.Get(context.Background(), "hello")
	if err != nil || svc.RebalanceStatus == nil || svc.RebalanceStatus.Requested != 1 {
		t.Fatalf("stored: %+v %v", svc.RebalanceStatus, err)
	}

	// --wait follows the request until the orchestrator finished it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The request made by the command below is number 2.
		for ctx.Err() == nil {
			if s, err := c.st.Services.Get(ctx, "hello"); err == nil && s.RebalanceStatus.Requested == 2 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		c.finishRebalance(ctx, "balanced: 2 nodes hold 1 tasks each")
	}()
	r = c.run("service", "rebalance", "hello", "--wait", "--poll-interval", "50ms")
	<-done
	if r.code != 0 || r.stdout != "service hello: balanced: 2 nodes hold 1 tasks each\n" {
		t.Fatalf("rebalance --wait: %+v", r)
	}
	// Nobody finishes this one: --timeout.
	r = c.run("service", "rebalance", "hello", "--wait", "--timeout", "300ms", "--poll-interval", "50ms")
	if r.code != 1 || !strings.Contains(r.stderr, "berth: service hello is not rebalanced after 300ms; see 'berth service ps hello'") {
		t.Fatalf("rebalance --wait timeout: %+v", r)
	}

	for _, bad := range []struct {
		args    []string
		wantErr string
		code    int
	}{
		{[]string{"service", "rebalance", "nope"}, "berth: no service named \"nope\"\n", 1},
		{[]string{"service", "rebalance"}, "service rebalance takes 1 argument", 2},
		{[]string{"service", "rebalance", "hello", "--wait", "--timeout", "0s"}, "--timeout and --poll-interval must be positive", 2},
	} {
		r := c.run(bad.args...)
		if r.code != bad.code || !strings.Contains(r.stderr, bad.wantErr) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Errorf("%v: %+v, want exit %d with %q on one line", bad.args, r, bad.code, bad.wantErr)
		}
	}
	if svc, _ := c.st.Services.Get(context.Background(), "hello"); svc.RebalanceStatus.Requested != 3 {
		t.Fatalf("refused commands changed the request count: %+v", svc.RebalanceStatus)
	}
}
