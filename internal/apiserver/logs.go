package apiserver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/store"
)

// agentClients keeps one HTTP client per node, pinned to the certificate the
// node's agent registered.
type agentClients struct {
	mu      sync.Mutex
	clients map[string]*http.Client
}

func newAgentClients() *agentClients { return &agentClients{clients: map[string]*http.Client{}} }

func (a *agentClients) forget(nodeID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.clients[nodeID]; ok {
		c.CloseIdleConnections()
		delete(a.clients, nodeID)
	}
}

func (a *agentClients) get(rec store.AgentRecord) *http.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.clients[rec.NodeID]; ok {
		return c
	}
	want, _ := hex.DecodeString(rec.CertSHA256)
	c := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			// The agent's certificate is self-signed; trust exactly the one it
			// registered.
			InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 {
					return errors.New("agent presented no certificate")
				}
				sum := sha256.Sum256(raw[0])
				if subtle.ConstantTimeCompare(sum[:], want) != 1 {
					return errors.New("agent certificate does not match the registered fingerprint")
				}
				return nil
			},
		},
		ResponseHeaderTimeout: 10 * time.Second,
		IdleConnTimeout:       90 * time.Second,
	}}
	a.clients[rec.NodeID] = c
	return c
}

// logsFollowWindow is how long followed lines are held to be put in time
// order across tasks (ADR 0034).
const logsFollowWindow = 500 * time.Millisecond

// serviceLogs streams the lines of a service's tasks merged in time order:
// GET /api/v1/services/{name}/logs?tail=N&follow=1&timestamps=1&since=T.
// Agents are always asked for stamped lines, to merge them; the stamps are
// shown only with timestamps (ADR 0034).
func (s *Server) serviceLogs(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	tail := -1
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return invalid("tail", "want a whole number of lines, got %q", v)
		}
		tail = n
	}
	follow, err := boolParam(r, "follow")
	if err != nil {
		return err
	}
	stamps, err := boolParam(r, "timestamps")
	if err != nil {
		return err
	}
	var since time.Time
	if v := q.Get("since"); v != "" {
		if since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return invalid("since", "want an RFC 3339 time such as 2006-01-02T15:04:05Z, got %q", v)
		}
	}
	svc, err := s.lookupService(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(200)
	out := &lineWriter{w: w}
	if f, ok := w.(http.Flusher); ok && follow {
		out.flush = f.Flush
	}
	emit := func(l logLine) { out.line(l.render(stamps)) }
	req := taskLogsRequest{tail: tail, since: since, follow: follow}
	seen := map[string]bool{}
	newTasks := func() ([]api.Task, error) {
		tasks, _, err := s.st.Tasks.List(ctx)
		if err != nil {
			return nil, err
		}
		var mine []api.Task
		for _, t := range tasks {
			if t.ServiceID == svc.ID && t.NodeID != "" && !seen[t.ID] && t.Status.State != api.TaskAssigned && t.Status.State != api.TaskPending {
				mine = append(mine, t)
				seen[t.ID] = true
			}
		}
		sortTasks(mine)
		return mine, nil
	}
	mine, err := newTasks()
	if err != nil {
		return nil
	}
	if !follow {
		srcs := s.openTaskLogs(ctx, mine, req, 0)
		defer func() {
			for _, src := range srcs {
				if src.body != nil {
					src.body.Close()
				}
			}
		}()
		mergeSources(srcs, emit)
		return nil
	}
	// Following: every task's lines go through one reorder window, and
	// replacement tasks are picked up as they start.
	lines := make(chan logLine, 256)
	var wg sync.WaitGroup
	feed := func(tasks []api.Task, first int) {
		for i, t := range tasks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				src := s.openTaskLogs(ctx, []api.Task{t}, req, first+i)[0]
				if src.body != nil {
					defer src.body.Close()
				}
				for {
					l, ok := src.next()
					if !ok {
						return
					}
					select {
					case lines <- l:
					case <-ctx.Done():
						return
					}
				}
			}()
		}
	}
	n := len(mine)
	feed(mine, 0)
	merged := make(chan struct{})
	go func() {
		defer close(merged)
		reorderLines(lines, ctx.Done(), logsFollowWindow, emit)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			<-merged
			return nil
		case <-tick.C:
			more, err := newTasks()
			if err != nil {
				continue
			}
			feed(more, n)
			n += len(more)
		}
	}
}

// taskLogsRequest is what is asked of each task's agent.
type taskLogsRequest struct {
	tail   int
	since  time.Time
	follow bool
}

// openTaskLogs opens the stamped log of each task at its agent, in parallel
// (at most 16 at once), and returns one source per task, numbered from first:
// a note line when the logs are unavailable.
func (s *Server) openTaskLogs(ctx context.Context, tasks []api.Task, req taskLogsRequest, first int) []*lineSource {
	srcs := make([]*lineSource, len(tasks))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, t := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			prefix := fmt.Sprintf("%s.%d.%s | ", t.ServiceName, t.Slot, short(t.ID))
			body, err := s.taskLogs(ctx, t, req)
			if err != nil {
				srcs[i] = noteSource(prefix+"(logs unavailable: "+err.Error()+")", first+i)
				return
			}
			srcs[i] = newLineSource(body, prefix, first+i)
			srcs[i].body = body
		}()
	}
	wg.Wait()
	return srcs
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// taskLogs asks a task's agent for its stamped log lines.
func (s *Server) taskLogs(ctx context.Context, t api.Task, req taskLogsRequest) (io.ReadCloser, error) {
	rec, err := s.st.Agents.Get(ctx, t.NodeID)
	if err != nil || rec.URL == "" {
		return nil, errors.New("the node's agent serves no logs")
	}
	q := url.Values{"tail": {strconv.Itoa(req.tail)}, "timestamps": {"1"}}
	if req.follow {
		q.Set("follow", "1")
	}
	if !req.since.IsZero() {
		q.Set("since", req.since.UTC().Format(time.RFC3339Nano))
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, rec.URL+"/v1/tasks/"+url.PathEscape(t.ID)+"/logs?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Authorization", "Bearer "+rec.Secret)
	resp, err := s.agents.get(rec).Do(hreq)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("agent answered %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return resp.Body, nil
}

// lineWriter writes whole lines from several goroutines.
type lineWriter struct {
	mu    sync.Mutex
	w     io.Writer
	flush func()
}

func (l *lineWriter) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, s+"\n")
	if l.flush != nil {
		l.flush()
	}
}

// serviceStats asks each running task's agent for a sample of its resource
// use; nothing about it is stored.
func (s *Server) serviceStats(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.lookupService(r)
	if err != nil {
		return err
	}
	tasks, _, err := s.st.Tasks.List(r.Context())
	if err != nil {
		return err
	}
	var live []api.Task
	for _, t := range tasks {
		if t.ServiceID == svc.ID && t.NodeID != "" && t.Status.State == api.TaskRunning {
			live = append(live, t)
		}
	}
	sortTasks(live)
	out := make([]api.TaskStats, len(live))
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, t := range live {
		out[i] = api.TaskStats{TaskID: t.ID, Service: t.ServiceName, Slot: t.Slot, NodeID: t.NodeID}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			st, err := s.taskStats(ctx, t)
			if err != nil {
				out[i].Error = err.Error()
				return
			}
			out[i].Stats = st
		}()
	}
	wg.Wait()
	writeJSON(w, 200, out)
	return nil
}

func (s *Server) taskStats(ctx context.Context, t api.Task) (*api.ResourceStats, error) {
	rec, err := s.st.Agents.Get(ctx, t.NodeID)
	if err != nil || rec.URL == "" {
		return nil, errors.New("the node's agent serves no stats")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rec.URL+"/v1/tasks/"+url.PathEscape(t.ID)+"/stats", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+rec.Secret)
	resp, err := s.agents.get(rec).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("agent answered %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	var st api.ResourceStats
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&st); err != nil {
		return nil, fmt.Errorf("agent answered: %w", err)
	}
	return &st, nil
}
