package apiserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/store"
	"github.com/berth-project/berth/internal/testutil"
)

// recorder is a slog handler that keeps every record, for tests of what is
// logged.
type recorder struct {
	mu   sync.Mutex
	recs []logged
}

// logged is one record: its level, message and attributes (groups
// flattened) as text.
type logged struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	l := logged{level: rec.Level, msg: rec.Message, attrs: map[string]string{}}
	rec.Attrs(func(a slog.Attr) bool {
		l.attrs[a.Key] = a.Value.String()
		return true
	})
	r.mu.Lock()
	r.recs = append(r.recs, l)
	r.mu.Unlock()
	return nil
}

// at returns the records of level.
func (r *recorder) at(level slog.Level) []logged {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logged
	for _, l := range r.recs {
		if l.level == level {
			out = append(out, l)
		}
	}
	return out
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestWrongTokenLogIsAggregated: a client sending wrong tokens gets one
// WARN line at once, then one summary line per interval with the count;
// the token is never logged; a source quiet for an interval logs at once
// again.
func TestWrongTokenLogIsAggregated(t *testing.T) {
	rec := &recorder{}
	clock := &fakeClock{t: time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)}
	// No store: authentication refuses these requests before any handler.
	s := New(Config{Token: testToken, Logger: slog.New(rec), Now: clock.Now})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	const secret = "berth_typo_of_the_real_token_0123456789"
	send := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			req, _ := http.NewRequest("GET", srv.URL+fmt.Sprintf("/api/v1/services?i=%d", i), nil)
			req.Header.Set("Authorization", "Bearer "+secret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Fatalf("wrong token: %d", resp.StatusCode)
			}
		}
	}
	warns := func(want int) []logged {
		t.Helper()
		w := rec.at(slog.LevelWarn)
		if len(w) != want {
			t.Fatalf("%d WARN lines, want %d: %+v", len(w), want, w)
		}
		return w
	}

	send(50)
	w := warns(1)
	if w[0].attrs["remote"] != "127.0.0.1" || w[0].attrs["path"] != "/api/v1/services" {
		t.Errorf("first line %+v", w[0])
	}
	clock.Add(30 * time.Second)
	send(10)
	warns(1)
	// An interval after the first line: the next failure brings the
	// summary of the 59 since.
	clock.Add(31 * time.Second)
	send(1)
	w = warns(2)
	if w[1].attrs["count"] != "59" || w[1].attrs["remote"] != "127.0.0.1" {
		t.Errorf("summary %+v, want count 59", w[1])
	}
	clock.Add(61 * time.Second)
	send(1)
	if w = warns(3); w[2].attrs["count"] != "1" {
		t.Errorf("second summary %+v, want count 1", w[2])
	}
	// With no further request, the pending count is written when the
	// interval is over (by the flush timer, here called by hand as the
	// clock is fake).
	clock.Add(61 * time.Second)
	s.badToken.mu.Lock()
	s.badToken.flushLocked(clock.Now())
	s.badToken.mu.Unlock()
	if w = warns(4); w[3].attrs["count"] != "1" {
		t.Errorf("flushed summary %+v, want count 1", w[3])
	}
	// Quiet for an interval after its last line: forgotten, so the next
	// failure logs at once.
	clock.Add(61 * time.Second)
	send(1)
	if w = warns(5); w[4].attrs["count"] != "" || w[4].attrs["path"] != "/api/v1/services" {
		t.Errorf("after a quiet interval %+v, want a first line", w[4])
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, l := range rec.recs {
		for k, v := range l.attrs {
			if strings.Contains(v, "typo_of_the_real") {
				t.Errorf("the token is logged: %s=%s in %q", k, v, l.msg)
			}
		}
	}
}

// TestWrongTokenLogSourcesAreBounded: the table of sources has a cap;
// sources past it are counted together, one line per interval.
func TestWrongTokenLogSourcesAreBounded(t *testing.T) {
	rec := &recorder{}
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	l := newFailureLog(slog.New(rec), "rejected", time.Minute, 4, func() time.Time { return now })
	for i := 0; i < 10000; i++ {
		l.record(now, fmt.Sprintf("192.0.2.%d", i), "GET", "/x")
	}
	l.mu.Lock()
	n := len(l.sources)
	l.mu.Unlock()
	if n != 4 {
		t.Fatalf("%d sources kept, cap 4", n)
	}
	w := rec.at(slog.LevelWarn)
	if len(w) != 5 || w[4].attrs["remote"] != "(other sources)" || w[4].attrs["count"] != "1" {
		t.Fatalf("lines %+v, want 4 first lines and one for the other sources", w)
	}
	now = now.Add(time.Minute)
	l.record(now, "192.0.2.1", "GET", "/x") // quiet sources are forgotten: a first line
	w = rec.at(slog.LevelWarn)
	if len(w) != 7 || w[5].attrs["count"] != "9995" {
		t.Fatalf("lines %+v, want the other sources' 9995 then a first line", w[5:])
	}
}

// TestWrongTokenLogFlushesPending: counts pending when requests stop are
// written by the failure log's timer, within about an interval.
func TestWrongTokenLogFlushesPending(t *testing.T) {
	rec := &recorder{}
	l := newFailureLog(slog.New(rec), "rejected", 50*time.Millisecond, 16, time.Now)
	for i := 0; i < 3; i++ {
		l.record(time.Now(), "192.0.2.1", "GET", "/x")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		w := rec.at(slog.LevelWarn)
		if len(w) == 2 {
			if w[1].attrs["count"] != "2" {
				t.Fatalf("summary %+v, want count 2", w[1])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no summary of the pending count: %+v", w)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCancelledRequestIsNotAnError: a request whose context the server
// cancels (as the manager does at shutdown) or the client drops fails
// without an ERROR line; the same error on a live request is still one.
func TestCancelledRequestIsNotAnError(t *testing.T) {
	testutil.SkipIfShort(t, "embedded etcd")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rec := &recorder{}
	s := New(Config{Store: st, Token: testToken, Version: "test", Logger: slog.New(rec)})
	srv := httptest.NewUnstartedServer(s.Handler())
	// Shutting down: every request's context is cancelled.
	base, stop := context.WithCancel(context.Background())
	stop()
	srv.Config.BaseContext = func(net.Listener) context.Context { return base }
	srv.Start()
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest("GET", srv.URL+"/api/v1/services", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
	if e := rec.at(slog.LevelError); len(e) != 0 {
		t.Errorf("a cancelled request logged an ERROR: %+v", e)
	}
	if d := rec.at(slog.LevelDebug); len(d) != 1 || !strings.Contains(d[0].attrs["err"], "context canceled") {
		t.Errorf("debug lines %+v, want one with the cancellation", d)
	}

	// A cancellation inside a request that is still wanted is an error.
	w := httptest.NewRecorder()
	s.writeError(w, httptest.NewRequest("GET", "/api/v1/services", nil), fmt.Errorf("store: commit: %w", context.Canceled))
	if e := rec.at(slog.LevelError); len(e) != 1 {
		t.Errorf("a cancellation of a live request: %d ERROR lines, want 1", len(e))
	}
}

// TestWrongTokenLogBoundsWhatItKeeps: a refused request's path is kept and
// logged clipped, and an IPv6 client's /64 is one source (a host owns all
// of it): unauthenticated input cannot grow the table's memory or the log.
func TestWrongTokenLogBoundsWhatItKeeps(t *testing.T) {
	rec := &recorder{}
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	l := newFailureLog(slog.New(rec), "rejected", time.Minute, 4, func() time.Time { return now })
	long := "/" + strings.Repeat("a", 64<<10)
	for i := 0; i < 1000; i++ {
		l.record(now, fmt.Sprintf("2001:db8::%x", i+1), strings.Repeat("M", 100), long)
	}
	l.mu.Lock()
	n := len(l.sources)
	var kept int
	for _, s := range l.sources {
		kept += len(s.path) + len(s.method)
	}
	l.mu.Unlock()
	if n != 1 {
		t.Errorf("%d sources for one /64, want 1", n)
	}
	if kept > 2*(maxLoggedPath+32) {
		t.Errorf("%d bytes of method and path kept for one source", kept)
	}
	w := rec.at(slog.LevelWarn)
	if len(w) != 1 {
		t.Fatalf("%d WARN lines, want 1", len(w))
	}
	if p := w[0].attrs["path"]; len(p) > maxLoggedPath+len("…") {
		t.Errorf("logged path of %d bytes", len(p))
	}
	if w[0].attrs["remote"] != "2001:db8::/64" {
		t.Errorf("remote %v, want the /64", w[0].attrs["remote"])
	}
}
