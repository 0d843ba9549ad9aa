package api

import (
	"context"
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

// Tasks returns the tasks q selects, across services.
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
	err := c.doJSON(ctx, http.MethodGet, "/tasks", v, nil, &out)
	return out, err
}
