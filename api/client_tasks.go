package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// TaskQuery selects tasks for Tasks. Empty fields select everything.
type TaskQuery struct {
	// Service is a service name.
	Service string
	// Node is a node id.
	Node string
	// All includes tasks that have ended (the history kept of each slot);
	// without it, only tasks desired running or not yet ended.
	All bool
}

// Tasks returns the tasks q selects, across services. It follows the
// continuation of a paged listing to the last page (the Berth-Continue
// header, ADR 0030), and works as well with a server that sends everything
// at once.
func (c *Client) Tasks(ctx context.Context, q TaskQuery) ([]Task, error) {
	v := url.Values{}
	if q.Service != "" {
		v.Set("service", q.Service)
	}
	if q.Node != "" {
		v.Set("node", q.Node)
	}
	if q.All {
		v.Set("all", "true")
	}
	var out []Task
	for {
		resp, err := c.do(ctx, http.MethodGet, "/tasks", v, nil, "")
		if err != nil {
			return nil, err
		}
		var page []Task
		err = decodeBody(resp, &page)
		next := resp.Header.Get("Berth-Continue")
		drainClose(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("api: GET /tasks: %w", err)
		}
		out = append(out, page...)
		if next == "" || len(page) == 0 {
			return out, nil
		}
		v.Set("continue", next)
	}
}
