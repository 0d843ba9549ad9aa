package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// Paging of the list endpoints (GET /services, /tasks and
// /services/{name}/tasks; ADR 0030). A response is a JSON array, as it always
// was; when more items follow, the HeaderContinue header carries a token to
// pass as the continue parameter of the next request. Every page of one
// listing is read from the same state of the store.
const (
	// DefaultPageSize is how many items a list response holds when the
	// request gives no limit.
	DefaultPageSize = 1000
	// MaxPageSize is the largest limit a list request may ask for.
	MaxPageSize = 5000
	// MaxPageBytes bounds a page further: a page ends after the item that
	// takes it over this many bytes of compact JSON, so that large tasks do
	// not make a page too large to read (MaxResponseBytes).
	MaxPageBytes = 8 << 20
	// HeaderContinue is the response header with the continuation token
	// of the next page; absent on the last page.
	HeaderContinue = "Berth-Continue"
	// HeaderTotal is the response header with the number of items in the
	// whole listing (every page).
	HeaderTotal = "Berth-Total"
)

// PageOptions asks for one page of a listing.
type PageOptions struct {
	// Limit is the most items to return; 0 means DefaultPageSize.
	Limit int
	// Continue is the Continue of the previous page; empty for the first.
	Continue string
}

// Page is one page of a listing.
type Page[T any] struct {
	Items []T
	// Continue is the token of the next page; empty on the last page.
	Continue string
	// Total is the number of items in the whole listing.
	Total int
}

// getPage reads one page of a list endpoint.
func getPage[T any](ctx context.Context, c *Client, path string, q url.Values, opts PageOptions) (Page[T], error) {
	q2 := url.Values{}
	for k, v := range q {
		q2[k] = v
	}
	if opts.Limit > 0 {
		q2.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Continue != "" {
		q2.Set("continue", opts.Continue)
	}
	var p Page[T]
	resp, err := c.do(ctx, http.MethodGet, path, q2, nil, "")
	if err != nil {
		return p, err
	}
	defer drainClose(resp.Body)
	if err := decodeBody(resp, &p.Items); err != nil {
		return p, fmt.Errorf("api: GET %s: %w", path, err)
	}
	p.Continue = resp.Header.Get(HeaderContinue)
	p.Total, _ = strconv.Atoi(resp.Header.Get(HeaderTotal))
	return p, nil
}

// getAll reads every page of a list endpoint. A server from before paging
// sends everything at once and no continuation.
func getAll[T any](ctx context.Context, c *Client, path string, q url.Values) ([]T, error) {
	var out []T
	opts := PageOptions{Limit: MaxPageSize}
	for {
		p, err := getPage[T](ctx, c, path, q, opts)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = make([]T, 0, max(p.Total, len(p.Items)))
		}
		out = append(out, p.Items...)
		if p.Continue == "" {
			return out, nil
		}
		opts.Continue = p.Continue
	}
}

// ListServicesPage returns one page of the services, in name order.
func (c *Client) ListServicesPage(ctx context.Context, opts PageOptions) (Page[Service], error) {
	return getPage[Service](ctx, c, "/services", nil, opts)
}

// ListTasksPage returns one page of the tasks that ListTasks returns.
func (c *Client) ListTasksPage(ctx context.Context, service, node string, opts PageOptions) (Page[Task], error) {
	return getPage[Task](ctx, c, "/tasks", taskQuery(service, node, false), opts)
}

// ServiceTasksPage returns one page of the tasks that ServiceTasks returns.
func (c *Client) ServiceTasksPage(ctx context.Context, name string, all bool, opts PageOptions) (Page[Task], error) {
	return getPage[Task](ctx, c, "/services/"+url.PathEscape(name)+"/tasks", taskQuery("", "", all), opts)
}

func taskQuery(service, node string, all bool) url.Values {
	q := url.Values{}
	if service != "" {
		q.Set("service", service)
	}
	if node != "" {
		q.Set("node", node)
	}
	if all {
		q.Set("all", "true")
	}
	return q
}
