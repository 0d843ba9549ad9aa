package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits on what the client reads, so that a broken or hostile server cannot
// make it allocate without bound.
const (
	// MaxResponseBytes is the largest JSON response body the client decodes.
	MaxResponseBytes = 64 << 20
	// MaxErrorBytes is how much of an error response body the client reads.
	MaxErrorBytes = 64 << 10
	// MaxAssignmentsBytes is the largest single Assignments message (one
	// line of the stream) the client accepts.
	MaxAssignmentsBytes = 64 << 20
)

// apiPrefix is the path under which the HTTP API is served.
const apiPrefix = "/api/v1"

// ErrClientConfig is returned by NewClient for an unusable ClientConfig.
var ErrClientConfig = errors.New("api: invalid client config")

// ErrResponse is wrapped by errors about a successful response the client
// could not read: a body over the limit, or one that is not the JSON it
// expected.
var ErrResponse = errors.New("api: bad response")

// ClientConfig says where the API is and how to reach it.
type ClientConfig struct {
	// Addr is the API's base address, such as "https://127.0.0.1:7443". A
	// bare "host:port" means https. Plain http is accepted only for
	// loopback addresses, because the bearer token would travel in clear.
	Addr string
	// Token is the bearer token sent with every request; empty sends none.
	Token string
	// CACertPEM holds the PEM certificates the server's certificate must
	// chain to. It is required for https unless HTTPClient is set.
	CACertPEM []byte
	// Addrs are more base addresses of the same cluster (other managers),
	// in the same form as Addr. A request that cannot reach one address is
	// sent to the next; the client remembers the one that answered. Addr
	// may be empty when Addrs is not.
	Addrs []string
	// Certificate is the client certificate presented to the server (a
	// node's identity, for mutual TLS). GetCertificate, if set, is asked
	// instead on every new connection, so that a renewed certificate is
	// used without a new Client. Both need CACertPEM (not HTTPClient).
	Certificate    *tls.Certificate
	GetCertificate func() (*tls.Certificate, error)
	// HTTPClient, if set, is used as it is (its transport decides what TLS
	// certificates to trust and which client certificate to present);
	// CACertPEM must then be empty.
	HTTPClient *http.Client
	// Logger receives the reasons streams end. Nil discards them.
	Logger *slog.Logger
}

// Client is a Go client of the Berth HTTP API. It is safe for concurrent use.
// It sets no overall timeout: bound each call with its context.
type Client struct {
	token string
	hc    *http.Client
	log   *slog.Logger

	mu    sync.Mutex
	bases []*url.URL // scheme://host[:port]/api/v1, no trailing slash
	cur   int        // index in bases of the address that last answered
}

// Info is what GET /info answers: about the manager that served the request.
type Info struct {
	// Version is the Berth version of the manager.
	Version string `json:"version"`
	// Leader reports whether this manager is the elected leader.
	Leader bool `json:"leader"`
}

// NewClient checks cfg and returns a client. It does not contact the server.
func NewClient(cfg ClientConfig) (*Client, error) {
	var addrs []string
	if strings.TrimSpace(cfg.Addr) != "" {
		addrs = append(addrs, cfg.Addr)
	}
	addrs = append(addrs, cfg.Addrs...)
	bases, err := parseBases(addrs)
	if err != nil {
		return nil, err
	}

	if strings.ContainsAny(cfg.Token, "\r\n") {
		return nil, fmt.Errorf("%w: token contains a line break", ErrClientConfig)
	}
	wantsCert := cfg.Certificate != nil || cfg.GetCertificate != nil
	anyHTTPS := false
	for _, u := range bases {
		anyHTTPS = anyHTTPS || u.Scheme == "https"
	}

	hc := cfg.HTTPClient
	switch {
	case hc != nil && len(cfg.CACertPEM) > 0:
		return nil, fmt.Errorf("%w: set CACertPEM or HTTPClient, not both", ErrClientConfig)
	case hc != nil && wantsCert:
		return nil, fmt.Errorf("%w: with HTTPClient, its transport presents the client certificate; leave Certificate unset", ErrClientConfig)
	case hc == nil && anyHTTPS:
		if len(cfg.CACertPEM) == 0 {
			return nil, fmt.Errorf("%w: https needs a CA certificate (CACertPEM)", ErrClientConfig)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CACertPEM) {
			return nil, fmt.Errorf("%w: CACertPEM holds no PEM certificate", ErrClientConfig)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil // the API is addressed directly; a proxy would see the token
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if wantsCert {
			get := cfg.GetCertificate
			if get == nil {
				c := cfg.Certificate
				get = func() (*tls.Certificate, error) { return c, nil }
			}
			// Always present it: the server verifies it, and a clear
			// refusal beats silently sending none.
			tr.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return get() }
		}
		hc = &http.Client{Transport: tr}
	case hc == nil:
		if wantsCert {
			return nil, fmt.Errorf("%w: a client certificate needs https", ErrClientConfig)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		hc = &http.Client{Transport: tr}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{bases: bases, token: cfg.Token, hc: hc, log: log.WithGroup("apiclient")}, nil
}

// parseBases checks base addresses and returns their API URLs, without
// duplicates.
func parseBases(addrs []string) ([]*url.URL, error) {
	var bases []*url.URL
	for _, a := range addrs {
		u, err := parseBase(a)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(bases, func(b *url.URL) bool { return b.String() == u.String() }) {
			bases = append(bases, u)
		}
	}
	if len(bases) == 0 {
		return nil, fmt.Errorf("%w: no address", ErrClientConfig)
	}
	return bases, nil
}

// parseBase checks one base address and returns its API URL.
func parseBase(raw string) (*url.URL, error) {
	addr := strings.TrimSpace(raw)
	if addr == "" {
		return nil, fmt.Errorf("%w: empty address", ErrClientConfig)
	}
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: address %q: %w", ErrClientConfig, raw, err)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: address %q: want scheme://host:port", ErrClientConfig, raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("%w: address %q: plain http is only allowed to a loopback address; use https", ErrClientConfig, raw)
		}
	default:
		return nil, fmt.Errorf("%w: address %q: scheme must be https", ErrClientConfig, raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + apiPrefix
	u.RawPath = ""
	return u, nil
}

// SetAddrs replaces the addresses the client fails over between (such as
// the manager list an agent fetched). The address that answered last is
// kept first if it is still in the list. The scheme rules of NewClient
// apply; a client made without a CA cannot take https addresses it did not
// have.
func (c *Client) SetAddrs(addrs []string) error {
	bases, err := parseBases(addrs)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.bases[c.cur].String()
	c.bases, c.cur = bases, 0
	for i, b := range bases {
		if b.String() == cur {
			c.cur = i
		}
	}
	return nil
}

// Addrs returns the base addresses the client fails over between (with the
// /api/v1 prefix), the one that answered last first.
func (c *Client) Addrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.bases))
	for i := range c.bases {
		out = append(out, c.bases[(c.cur+i)%len(c.bases)].String())
	}
	return out
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Addr returns the base address of the API, including the /api/v1 prefix:
// of the manager that answered last when there are several.
func (c *Client) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bases[c.cur].String()
}

// ListServices returns every service, reading every page.
func (c *Client) ListServices(ctx context.Context) ([]Service, error) {
	return getAll[Service](ctx, c, "/services", nil)
}

// GetService returns one service. A missing service is an *Error with code
// not_found (see IsNotFound).
func (c *Client) GetService(ctx context.Context, name string) (Service, error) {
	var out Service
	err := c.doJSON(ctx, http.MethodGet, "/services/"+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// DeployService creates or updates the service name from a spec document,
// sent as it is with the given content type ("application/json" or
// "application/yaml"). created reports whether the service is new.
func (c *Client) DeployService(ctx context.Context, name string, doc []byte, contentType string) (svc Service, created bool, err error) {
	if contentType == "" {
		contentType = "application/yaml"
	}
	resp, err := c.do(ctx, http.MethodPut, "/services/"+url.PathEscape(name), nil, bytes.NewReader(doc), contentType)
	if err != nil {
		return svc, false, err
	}
	defer drainClose(resp.Body)
	if err := decodeBody(resp, &svc); err != nil {
		return svc, false, fmt.Errorf("api: PUT /services/%s: %w", name, err)
	}
	return svc, resp.StatusCode == http.StatusCreated, nil
}

// ScaleService sets the replica count of a replicated service.
func (c *Client) ScaleService(ctx context.Context, name string, replicas int) (Service, error) {
	var out Service
	body := struct {
		Replicas int `json:"replicas"`
	}{replicas}
	err := c.doJSON(ctx, http.MethodPost, "/services/"+url.PathEscape(name)+"/scale", nil, body, &out)
	return out, err
}

// RemoveService deletes a service; its tasks are stopped.
func (c *Client) RemoveService(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, "/services/"+url.PathEscape(name), nil, nil, nil)
}

// ServiceTasks returns the tasks of a service: those desired running or not
// yet ended, or with all, its history too. It reads every page.
func (c *Client) ServiceTasks(ctx context.Context, name string, all bool) ([]Task, error) {
	return getAll[Task](ctx, c, "/services/"+url.PathEscape(name)+"/tasks", taskQuery("", "", all))
}

// ServiceLogs opens the log stream of a service's tasks: the last tail lines
// (all of them if tail is negative), then, with follow, new lines until ctx
// ends or the server closes the stream. The caller must close the reader.
func (c *Client) ServiceLogs(ctx context.Context, name string, tail int, follow bool) (io.ReadCloser, error) {
	q := url.Values{}
	if tail >= 0 {
		q.Set("tail", strconv.Itoa(tail))
	}
	if follow {
		q.Set("follow", "true")
	}
	resp, err := c.do(ctx, http.MethodGet, "/services/"+url.PathEscape(name)+"/logs", q, nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// LogOptions selects the lines ServiceLogsWith returns.
type LogOptions struct {
	// Tail is the number of lines from the end of each task's log, counted
	// after Since; all when negative.
	Tail int
	// Since, when not zero, leaves out lines written before it.
	Since time.Time
	// Follow keeps the stream open for new lines until ctx ends.
	Follow bool
	// Timestamps starts each line with the time it was written (RFC 3339,
	// UTC, nanoseconds) and a space.
	Timestamps bool
}

// ServiceLogsWith opens the log stream of a service's tasks, their lines
// merged in time order, as opts says. The caller must close the reader.
func (c *Client) ServiceLogsWith(ctx context.Context, name string, opts LogOptions) (io.ReadCloser, error) {
	q := url.Values{}
	if opts.Tail >= 0 {
		q.Set("tail", strconv.Itoa(opts.Tail))
	}
	if opts.Follow {
		q.Set("follow", "true")
	}
	if opts.Timestamps {
		q.Set("timestamps", "true")
	}
	if !opts.Since.IsZero() {
		q.Set("since", opts.Since.UTC().Format(time.RFC3339Nano))
	}
	resp, err := c.do(ctx, http.MethodGet, "/services/"+url.PathEscape(name)+"/logs", q, nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ServiceStats returns a sample of the resource use of each of a service's
// running tasks, measured by their agents.
func (c *Client) ServiceStats(ctx context.Context, name string) ([]TaskStats, error) {
	var out []TaskStats
	err := c.doJSON(ctx, http.MethodGet, "/services/"+url.PathEscape(name)+"/stats", nil, nil, &out)
	return out, err
}

// ListTasks returns tasks, filtered by service name and node id when they
// are not empty. It reads every page.
func (c *Client) ListTasks(ctx context.Context, service, node string) ([]Task, error) {
	return getAll[Task](ctx, c, "/tasks", taskQuery(service, node, false))
}

// GetTask returns one task by id.
func (c *Client) GetTask(ctx context.Context, id string) (Task, error) {
	var out Task
	err := c.doJSON(ctx, http.MethodGet, "/tasks/"+url.PathEscape(id), nil, nil, &out)
	return out, err
}

// ListNodes returns every node.
func (c *Client) ListNodes(ctx context.Context) ([]Node, error) {
	var out []Node
	err := c.doJSON(ctx, http.MethodGet, "/nodes", nil, nil, &out)
	return out, err
}

// GetNode returns one node by id or hostname.
func (c *Client) GetNode(ctx context.Context, idOrHostname string) (Node, error) {
	var out Node
	err := c.doJSON(ctx, http.MethodGet, "/nodes/"+url.PathEscape(idOrHostname), nil, nil, &out)
	return out, err
}

// NodeTopology returns a node's CPU topology drawn as text (see
// GET /api/v1/nodes/{id}/topology): its units, CPUs, the task holding each
// CPU, the reserved CPUs and the shared pool.
func (c *Client) NodeTopology(ctx context.Context, idOrHostname string) (string, error) {
	path := "/nodes/" + url.PathEscape(idOrHostname) + "/topology"
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil, "")
	if err != nil {
		return "", err
	}
	defer drainClose(resp.Body)
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxTopologyBytes+1))
	if err != nil {
		return "", fmt.Errorf("api: GET %s: %w", path, err)
	}
	if len(b) > MaxTopologyBytes {
		return "", fmt.Errorf("%w: GET %s: the drawing is over %d bytes", ErrResponse, path, MaxTopologyBytes)
	}
	return string(b), nil
}

// MaxTopologyBytes caps the text NodeTopology reads.
const MaxTopologyBytes = 8 << 20

// Info returns facts about the manager that answers.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var out Info
	err := c.doJSON(ctx, http.MethodGet, "/info", nil, nil, &out)
	return out, err
}

// RegisterNode announces an agent's node and returns the stored node.
func (c *Client) RegisterNode(ctx context.Context, reg NodeRegistration) (Node, error) {
	var out Node
	err := c.doJSON(ctx, http.MethodPost, "/nodes/register", nil, reg, &out)
	return out, err
}

// WatchAssignments opens the assignment stream of a node. It returns an
// error if the stream cannot be opened; after that, a goroutine decodes the
// newline-delimited Assignments messages and sends them on the channel,
// which it closes when the stream ends, breaks or ctx is done. Each message
// replaces the one before, so a receiver that falls behind gets only the
// latest: the channel never holds a stale set behind a newer one. Why a
// stream ended is logged to ClientConfig.Logger; the caller reconnects.
func (c *Client) WatchAssignments(ctx context.Context, nodeID string) (<-chan Assignments, error) {
	path := "/nodes/" + url.PathEscape(nodeID) + "/assignments"
	resp, err := c.do(ctx, http.MethodGet, path, nil, nil, "")
	if err != nil {
		return nil, err
	}
	ch := make(chan Assignments, 1)
	go func() {
		defer close(ch)
		// Close without draining: the rest of a stream may never come.
		defer resp.Body.Close()
		err := readNDJSON(resp.Body, MaxAssignmentsBytes, func(line []byte) error {
			var a Assignments
			if err := json.Unmarshal(line, &a); err != nil {
				return fmt.Errorf("%w: decoding assignments: %w", ErrResponse, err)
			}
			sendLatest(ch, a)
			return nil
		})
		switch {
		case ctx.Err() != nil:
			c.log.Debug("assignment stream ended", "node", nodeID, "reason", ctx.Err())
		case err != nil:
			c.log.Warn("assignment stream broke", "node", nodeID, "err", err)
		default:
			c.log.Info("assignment stream closed by the server", "node", nodeID)
		}
	}()
	return ch, nil
}

// sendLatest puts a on ch (capacity 1), replacing a message the receiver
// has not taken yet: only the newest set matters. The caller must be the
// only sender, so that after the drain the send cannot block.
func sendLatest(ch chan Assignments, a Assignments) {
	select {
	case <-ch:
	default:
	}
	ch <- a
}

// readNDJSON calls fn with each non-empty line of r until EOF (nil), a line
// over max bytes, a read error or an error from fn.
func readNDJSON(r io.Reader, max int, fn func([]byte) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > max {
			return fmt.Errorf("%w: a message is over %d bytes", ErrResponse, max)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if t := bytes.TrimSpace(line); len(t) > 0 && (err == nil || errors.Is(err, io.EOF)) {
			if ferr := fn(t); ferr != nil {
				return ferr
			}
		}
		line = line[:0]
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ReportStatus sends an agent's heartbeat and task status changes.
func (c *Client) ReportStatus(ctx context.Context, nodeID string, rep StatusReport) error {
	return c.doJSON(ctx, http.MethodPost, "/nodes/"+url.PathEscape(nodeID)+"/status", nil, rep, nil)
}

// doJSON sends in (if not nil) as JSON and decodes the response into out (if
// not nil).
func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	ctype := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("api: %s %s: encoding request: %w", method, path, err)
		}
		body, ctype = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, method, path, q, body, ctype)
	if err != nil {
		return err
	}
	defer drainClose(resp.Body)
	if out == nil {
		return nil
	}
	if err := decodeBody(resp, out); err != nil {
		return fmt.Errorf("api: %s %s: %w", method, path, err)
	}
	return nil
}

// do sends a request and returns a 2xx response; any other status becomes
// an *Error. The caller closes the body. With several addresses, a request
// that cannot reach one goes to the next (see retryable), starting with the
// one that answered last.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, ctype string) (*http.Response, error) {
	var payload []byte
	if body != nil {
		b, err := io.ReadAll(body)
		if err != nil {
			return nil, fmt.Errorf("api: %s %s: reading the request body: %w", method, path, err)
		}
		payload = b
	}
	c.mu.Lock()
	bases, start := c.bases, c.cur
	c.mu.Unlock()
	var errs []error
	for i := range bases {
		idx := (start + i) % len(bases)
		base := bases[idx]
		resp, err := c.doOnce(ctx, base, method, path, q, payload, body != nil, ctype)
		if err == nil {
			if idx != start {
				c.mu.Lock()
				if len(c.bases) == len(bases) && c.bases[idx] == base {
					c.cur = idx
				}
				c.mu.Unlock()
				c.log.Info("failed over to another manager", "addr", base.Host)
			}
			return resp, nil
		}
		var ae *Error
		switch {
		case ctx.Err() != nil:
			return nil, err
		case errors.As(err, &ae):
			// An answer is final, except a manager that says it cannot
			// serve now (no quorum, shutting down): another may. Only
			// idempotent requests move on, since the first may still
			// have been applied.
			if !unavailable(ae.Status) || !idempotent(method) {
				return nil, err
			}
		case !retryable(method, err):
			return nil, err
		}
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, fmt.Errorf("api: no manager answered: %w", errors.Join(errs...))
}

// retryable reports whether a request that failed with a transport error
// may go to another manager: always if it was never sent (no connection),
// and for idempotent methods whatever broke.
func retryable(method string, err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return idempotent(method)
}

// idempotent reports whether sending a request with method twice has the
// effect of sending it once.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

// unavailable reports whether an HTTP status says the server (or a proxy in
// front of it) cannot serve the request now, so that another manager may.
func unavailable(status int) bool {
	switch status {
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// doOnce sends one request to base.
func (c *Client) doOnce(ctx context.Context, base *url.URL, method, path string, q url.Values, payload []byte, hasBody bool, ctype string) (*http.Response, error) {
	// The caller escaped each path segment, so the URL is built as text.
	target := base.String() + path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	var body io.Reader
	if hasBody {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, fmt.Errorf("api: %s %s: %w", method, path, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "berth-client")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// url.Error repeats the whole URL; say it once, shorter.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil, fmt.Errorf("api: %s %s: %w", method, path, err)
		}
		return nil, fmt.Errorf("api: cannot reach %s: %w", base.Host, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer drainClose(resp.Body)
	return nil, errorFrom(resp)
}

// errorFrom turns a non-2xx response into an *Error, from its JSON body if
// it has one, else from its status and the start of its body.
func errorFrom(resp *http.Response) *Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxErrorBytes))
	var e Error
	if json.Unmarshal(b, &e) == nil && (e.Code != "" || e.Message != "") {
		if e.Code == "" {
			e.Code = codeFor(resp.StatusCode)
		}
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
		e.Status = resp.StatusCode
		return &e
	}
	msg := fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	if text := firstLine(b); text != "" {
		msg += ": " + text
	}
	return &Error{Code: codeFor(resp.StatusCode), Message: msg, Status: resp.StatusCode}
}

// codeFor maps an HTTP status to the error code a Berth server would send.
func codeFor(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return CodeInvalid
	case http.StatusUnauthorized:
		return CodeUnauthorized
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusConflict, http.StatusPreconditionFailed:
		return CodeConflict
	case http.StatusRequestEntityTooLarge:
		return CodeTooLarge
	case http.StatusUnsupportedMediaType:
		return CodeUnsupported
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return CodeUnavailable
	}
	return CodeInternal
}

// firstLine returns the first non-empty line of b, trimmed and cut short.
func firstLine(b []byte) string {
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if len(l) > 200 {
				l = l[:200] + "…"
			}
			return strings.ToValidUTF8(l, "?")
		}
	}
	return ""
}

// decodeBody decodes a JSON response body of at most MaxResponseBytes.
func decodeBody(resp *http.Response, out any) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("reading response: %w", err)
	}
	if len(b) > MaxResponseBytes {
		return fmt.Errorf("%w: response is over %d bytes", ErrResponse, MaxResponseBytes)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%w: decoding %s response: %w", ErrResponse, resp.Header.Get("Content-Type"), err)
	}
	return nil
}

// drainClose reads a little of what is left of a body, so the connection
// can be reused, and closes it.
func drainClose(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, 4<<10))
	_ = rc.Close()
}
