package api

import (
	"context"
	"net/http"
	"net/url"
)

// UpdateNode changes a node's availability and labels (PATCH
// /api/v1/nodes/{id}) and returns the node as stored. node is an id, a
// unique id prefix or a hostname.
func (c *Client) UpdateNode(ctx context.Context, node string, u NodeUpdate) (Node, error) {
	var out Node
	err := c.doJSON(ctx, http.MethodPatch, "/nodes/"+url.PathEscape(node), nil, u, &out)
	return out, err
}

// RemoveNode removes a node (DELETE /api/v1/nodes/{id}). Without force only
// a down node is removed; with it a ready one too, and its tasks are
// replaced elsewhere.
func (c *Client) RemoveNode(ctx context.Context, node string, force bool) error {
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	return c.doJSON(ctx, http.MethodDelete, "/nodes/"+url.PathEscape(node), q, nil, nil)
}
