package apiserver

import (
	"bufio"
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
	svc, err := s.lookupService(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(200)
	out := &lineWriter{w: w}
	if f, ok := w.(http.Flusher); ok {
		out.flush = f.Flush
	}
	seen := map[string]bool{}
	var wg sync.WaitGroup
	defer wg.Wait()
	attach := func() error {
		tasks, _, err := s.st.Tasks.List(ctx)
		if err != nil {
			return err
		}
		var mine []api.Task
		for _, t := range tasks {
			if t.ServiceID == svc.ID && t.NodeID != "" && !seen[t.ID] && t.Status.State != api.TaskAssigned && t.Status.State != api.TaskPending {
				mine = append(mine, t)
			}
		}
		sortTasks(mine)
		for _, t := range mine {
			seen[t.ID] = true
			prefix := fmt.Sprintf("%s.%d.%s | ", t.ServiceName, t.Slot, short(t.ID))
			if !follow {
				s.copyTaskLogs(ctx, t, tail, false, prefix, out)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.copyTaskLogs(ctx, t, tail, true, prefix, out)
			}()
		}
		return nil
	}
	if err := attach(); err != nil || !follow {
		return nil
	}
	// Following: pick up replacement tasks as they start.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := attach(); err != nil {
				return nil
			}
		}
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// copyTaskLogs copies one task's log lines from its agent, each with prefix.
func (s *Server) copyTaskLogs(ctx context.Context, t api.Task, tail int, follow bool, prefix string, out *lineWriter) {
	rec, err := s.st.Agents.Get(ctx, t.NodeID)
	if err != nil || rec.URL == "" {
		out.line(prefix + "(logs unavailable: the node's agent serves no logs)")
		return
	}
	u := rec.URL + "/v1/tasks/" + url.PathEscape(t.ID) + "/logs?tail=" + strconv.Itoa(tail)
	if follow {
		u += "&follow=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return
	}
	req.Header.Set("Authorization", "Bearer "+rec.Secret)
	resp, err := s.agents.get(rec).Do(req)
	if err != nil {
		if ctx.Err() == nil {
			out.line(prefix + "(logs unavailable: " + err.Error() + ")")
		}
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		out.line(prefix + fmt.Sprintf("(logs unavailable: agent answered %d %s)", resp.StatusCode, string(b)))
		return
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		out.line(prefix + sc.Text())
	}
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
