package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
)

// Drained asks whether every gateway of the cluster has stopped sending task
// new traffic and has nothing in flight to it, given the store revision of
// the task's desired shutdown (an agent asks before it signals the task).
func (c *Client) Drained(ctx context.Context, task string, revision int64) (DrainStatus, error) {
	var out DrainStatus
	q := url.Values{"revision": {strconv.FormatInt(revision, 10)}}
	err := c.doJSON(ctx, http.MethodGet, "/agent/drained/"+url.PathEscape(task), q, nil, &out)
	return out, err
}
