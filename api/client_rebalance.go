package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"
)

// ErrRebalanceNotDone is returned by WaitForRebalance when the service's
// rebalance request was superseded or the service was replaced.
var ErrRebalanceNotDone = errors.New("api: rebalance request not done")

// Rebalance asks the orchestrator to spread a replicated service's tasks
// evenly over the nodes that can run them, once, even if the service opted
// out (rebalance: false). The answer's RebalanceStatus.Requested is the
// request to wait for (WaitForRebalance).
func (c *Client) Rebalance(ctx context.Context, name string) (Service, error) {
	var out Service
	err := c.doJSON(ctx, http.MethodPost, "/services/"+url.PathEscape(name)+"/rebalance", nil, nil, &out)
	return out, err
}

// WaitForRebalance polls the service every interval until the
// orchestrator finished rebalance request number request (or a later one)
// and returns the service read last, whose RebalanceStatus.Message says how
// it ended, or ctx's error.
func (c *Client) WaitForRebalance(ctx context.Context, name string, request uint64, interval time.Duration) (Service, error) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		svc, err := c.GetService(ctx, name)
		if err != nil {
			return svc, err
		}
		st := svc.RebalanceStatus
		if st == nil || st.Requested < request {
			return svc, ErrRebalanceNotDone // the service was replaced
		}
		if st.Done >= request {
			return svc, nil
		}
		select {
		case <-ctx.Done():
			return svc, ctx.Err()
		case <-t.C:
		}
	}
}
