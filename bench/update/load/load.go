// Package load is a closed-loop HTTP load generator for zero-downtime
// tests: several workers send requests to one URL for as long as a context
// lives, some over keep-alive connections and some over a new connection
// per request, and every request is counted: a response with a non-2xx
// status or a connection error is a failure. Each 2xx response's JSON
// "version" field (what Berth's whoami app answers with) is recorded with
// the time its request started, so a test can ask which versions answered
// after a given moment.
//
// Retries are not allowed to hide failures: requests are POSTs without a
// body, which Go's http.Transport never replays on another connection
// (it does replay idempotent GETs that hit a keep-alive connection the
// server had just closed). The one retry left is the transport's own for a
// request of which not a byte was written, which any client makes safely.
//
// The package is used by the e2e tests (test/e2e) and by the benchmark
// (bench/update/loadgen). It must not import anything of Berth: it measures
// Berth from the outside, as it measures Docker Swarm.
package load

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config says what to load and how.
type Config struct {
	// URL is what every request asks for (POST, no body).
	URL string
	// Host, if set, is sent as the Host header (for HTTP routes).
	Host string
	// KeepAlive is how many workers reuse their connections.
	KeepAlive int
	// NewConn is how many workers open a new connection per request.
	NewConn int
	// Timeout bounds one request (default 10s).
	Timeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// MaxSamples is how many failures are kept with their time and error
	// (default 50).
	MaxSamples int
}

// Failure is one failed request.
type Failure struct {
	// At is when the request started.
	At time.Time
	// Worker says which worker sent it ("keepalive 3", "newconn 1").
	Worker string
	// Err is the connection error or the unexpected status.
	Err string
}

// VersionSeen is what is known of the responses of one version.
type VersionSeen struct {
	Count int64
	// First and Last are the earliest and latest start of a request that
	// this version answered.
	First, Last time.Time
}

// Stats is the tally of a run.
type Stats struct {
	Total, Failed int64
	// ByError counts failures by error text (addresses and ports removed,
	// so that equal errors fall together).
	ByError map[string]int64
	// Samples are the first failures (Config.MaxSamples of them).
	Samples []Failure
	// Versions maps each reported version to what was seen of it; a 2xx
	// response without a version counts under "".
	Versions map[string]*VersionSeen
	// Started and Ended bound the run.
	Started, Ended time.Time
}

// Generator runs the load; Snapshot reads the tally while it runs.
type Generator struct {
	cfg Config

	mu sync.Mutex
	st Stats
}

// New returns a Generator for cfg with its defaults filled in.
func New(cfg Config) *Generator {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxSamples <= 0 {
		cfg.MaxSamples = 50
	}
	return &Generator{cfg: cfg, st: Stats{ByError: map[string]int64{}, Versions: map[string]*VersionSeen{}}}
}

// Run sends requests until ctx ends and returns the tally. Requests cut off
// by the end of ctx are not counted.
func (g *Generator) Run(ctx context.Context) Stats {
	g.mu.Lock()
	g.st.Started = g.cfg.Now()
	g.mu.Unlock()
	var wg sync.WaitGroup
	for i := range g.cfg.KeepAlive {
		tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true,
			DialContext: (&net.Dialer{Timeout: g.cfg.Timeout}).DialContext}
		wg.Go(func() { g.worker(ctx, fmt.Sprintf("keepalive %d", i), tr) })
	}
	for i := range g.cfg.NewConn {
		tr := &http.Transport{DisableKeepAlives: true, DisableCompression: true,
			DialContext: (&net.Dialer{Timeout: g.cfg.Timeout}).DialContext}
		wg.Go(func() { g.worker(ctx, fmt.Sprintf("newconn %d", i), tr) })
	}
	wg.Wait()
	g.mu.Lock()
	g.st.Ended = g.cfg.Now()
	g.mu.Unlock()
	return g.Snapshot()
}

// Snapshot returns a copy of the tally so far.
func (g *Generator) Snapshot() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.st
	out.ByError = make(map[string]int64, len(g.st.ByError))
	for k, v := range g.st.ByError {
		out.ByError[k] = v
	}
	out.Samples = append([]Failure(nil), g.st.Samples...)
	out.Versions = make(map[string]*VersionSeen, len(g.st.Versions))
	for k, v := range g.st.Versions {
		c := *v
		out.Versions[k] = &c
	}
	return out
}

func (g *Generator) worker(ctx context.Context, name string, tr *http.Transport) {
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: g.cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for ctx.Err() == nil {
		start := g.cfg.Now()
		version, err := g.once(ctx, client)
		if ctx.Err() != nil {
			return // cut off by the end of the run: not the server's doing
		}
		g.record(name, start, version, err)
	}
}

// reply is the part of the answer that is read.
type reply struct {
	Version string `json:"version"`
}

func (g *Generator) once(ctx context.Context, client *http.Client) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.cfg.URL, nil)
	if err != nil {
		return "", err
	}
	if g.cfg.Host != "" {
		req.Host = g.cfg.Host
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if err != nil {
		return "", fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", fmt.Errorf("status %d: %.80s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var r reply
	_ = json.Unmarshal(body, &r) // a body without a version is "" (still a success)
	return r.Version, nil
}

func (g *Generator) record(worker string, start time.Time, version string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.st.Total++
	if err != nil {
		g.st.Failed++
		g.st.ByError[errorKind(err)]++
		if len(g.st.Samples) < g.cfg.MaxSamples {
			g.st.Samples = append(g.st.Samples, Failure{At: start, Worker: worker, Err: err.Error()})
		}
		return
	}
	v := g.st.Versions[version]
	if v == nil {
		v = &VersionSeen{First: start}
		g.st.Versions[version] = v
	}
	v.Count++
	if start.Before(v.First) {
		v.First = start
	}
	if start.After(v.Last) {
		v.Last = start
	}
}

// errorKind is an error's text without the addresses in it, so that the
// same failure on different connections counts as one kind.
func errorKind(err error) string {
	f := strings.Fields(err.Error())
	for i, w := range f {
		w = strings.Trim(w, `"():,`)
		if a, b, ok := strings.Cut(w, "->"); ok && isAddr(a) && isAddr(b) {
			f[i] = "ADDR->ADDR"
		} else if isAddr(w) {
			f[i] = "ADDR"
		} else if strings.HasPrefix(w, "http://") || strings.HasPrefix(w, "https://") {
			f[i] = "URL"
		}
	}
	return strings.Join(f, " ")
}

func isAddr(s string) bool {
	_, _, err := net.SplitHostPort(s)
	return err == nil
}

// Since returns the versions that answered requests started at or after t,
// sorted.
func (s Stats) Since(t time.Time) []string {
	var out []string
	for v, seen := range s.Versions {
		if !seen.Last.Before(t) {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// Sub returns the requests and failures of s that are not in earlier (a
// snapshot of the same run).
func (s Stats) Sub(earlier Stats) (total, failed int64) {
	return s.Total - earlier.Total, s.Failed - earlier.Failed
}

// String is a one-line summary: totals, failures by kind, and the count of
// each version.
func (s Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests, %d failed", s.Total, s.Failed)
	if d := s.Ended.Sub(s.Started); d > 0 {
		fmt.Fprintf(&b, " in %s (%.0f/s)", d.Round(time.Millisecond), float64(s.Total)/d.Seconds())
	}
	var kinds []string
	for k, n := range s.ByError {
		kinds = append(kinds, fmt.Sprintf("%d× %s", n, k))
	}
	sort.Strings(kinds)
	if len(kinds) > 0 {
		fmt.Fprintf(&b, " [%s]", strings.Join(kinds, "; "))
	}
	var vs []string
	for v, seen := range s.Versions {
		vs = append(vs, fmt.Sprintf("%s=%d", v, seen.Count))
	}
	sort.Strings(vs)
	fmt.Fprintf(&b, "; versions %s", strings.Join(vs, " "))
	return b.String()
}
