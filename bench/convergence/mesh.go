package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
)

// meshResult is the mesh update latency: from a task's health change, as its
// agent recorded it, to the gateway acting on it.
type meshResult struct {
	// Added: task healthy → first request the gateway sent it.
	Added []time.Duration
	// Removed: task unhealthy → the last request the gateway sent it
	// (started at most this long after); 0 when none was sent after.
	Removed []time.Duration
	// Requests and Failed count the load generator's requests.
	Requests, Failed int
}

// measureMesh deploys a 2-replica whoami service behind an HTTP route whose
// tasks turn unhealthy life after they start (so their agent replaces
// them), sends requests through the node's HTTP entrypoint as fast as two
// keep-alive clients can, and matches every health change the API reports
// (with the agent's timestamp; same host, same clock) with the requests the
// gateway routed to that task. It stops after flips unhealthy tasks.
func measureMesh(ctx context.Context, in *instance, flips int, life time.Duration) (meshResult, error) {
	var res meshResult
	entry, err := meshHTTPAddr(in.dataDir)
	if err != nil {
		return res, err
	}
	const name = "meshlat"
	spec := fmt.Sprintf(`name: %s
replicas: 2
task:
  command: [berth, whoami, --port, "${PORT_HTTP}", --unhealthy-after, %s]
  ports: [{name: http}]
  health: {http: {port: http, path: /healthz}, interval: 100ms, retries: 1, start_period: 1s}
  stop_grace_period: 2s
restart: {condition: any, delay: 100ms, max_delay: 200ms}
routes: [{host: meshlat.bench, port: http}]
`, name, life)
	if _, err := in.client.Deploy(ctx, name, []byte(spec), "application/yaml"); err != nil {
		return res, fmt.Errorf("mesh: deploy: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = in.client.RemoveService(rctx, name)
	}()

	// The load: request start time and the task that answered.
	type hit struct {
		at   time.Time
		task string
	}
	var mu sync.Mutex
	var hits []hit
	lctx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Timeout: 5 * time.Second}
			for lctx.Err() == nil {
				req, _ := http.NewRequestWithContext(lctx, http.MethodGet, "http://"+entry+"/", nil)
				req.Host = "meshlat.bench"
				at := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					if lctx.Err() == nil {
						mu.Lock()
						res.Requests++
						res.Failed++
						mu.Unlock()
					}
					continue
				}
				var who struct {
					Name string `json:"name"`
				}
				err = json.NewDecoder(resp.Body).Decode(&who)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				res.Requests++
				if err != nil || resp.StatusCode != 200 {
					res.Failed++
				} else {
					// BERTH_TASK_NAME is service.slot.<first 8 of the id>.
					hits = append(hits, hit{at, who.Name[strings.LastIndexByte(who.Name, '.')+1:]})
				}
				mu.Unlock()
			}
		}()
	}

	// Health changes, by polling the API (every task, ended ones too).
	healthyAt := map[string]time.Time{}
	unhealthyAt := map[string]time.Time{}
	deadline := time.Now().Add(time.Duration(flips)*life + 2*time.Minute)
	for len(unhealthyAt) < flips && time.Now().Before(deadline) && ctx.Err() == nil {
		tasks, err := in.client.ServiceTasks(ctx, name, true)
		if err != nil {
			stopLoad()
			wg.Wait()
			return res, err
		}
		for _, t := range tasks {
			short := t.ID[:min(8, len(t.ID))]
			switch t.Status.Health {
			case api.HealthHealthy:
				if _, ok := healthyAt[short]; !ok {
					healthyAt[short] = t.Status.Timestamp
				}
			case api.HealthUnhealthy:
				if _, ok := unhealthyAt[short]; !ok {
					unhealthyAt[short] = t.Status.Timestamp
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Let the last replacements become healthy and get traffic.
	time.Sleep(life / 2)
	stopLoad()
	wg.Wait()
	if len(unhealthyAt) < flips {
		return res, fmt.Errorf("mesh: only %d of %d tasks turned unhealthy in time", len(unhealthyAt), flips)
	}
	first := map[string]time.Time{}
	last := map[string]time.Time{}
	for _, h := range hits {
		if f, ok := first[h.task]; !ok || h.at.Before(f) {
			first[h.task] = h.at
		}
		if l, ok := last[h.task]; !ok || h.at.After(l) {
			last[h.task] = h.at
		}
	}
	for task, at := range healthyAt {
		if f, ok := first[task]; ok {
			res.Added = append(res.Added, max(f.Sub(at), 0))
		}
	}
	for task, at := range unhealthyAt {
		if l, ok := last[task]; ok {
			res.Removed = append(res.Removed, max(l.Sub(at), 0))
		}
	}
	return res, nil
}

// meshHTTPAddr reads the HTTP entrypoint's address from the data dir's
// mesh.addr ("http HOST:PORT" lines).
func meshHTTPAddr(dataDir string) (string, error) {
	f, err := os.Open(filepath.Join(dataDir, "mesh.addr"))
	if err != nil {
		return "", fmt.Errorf("mesh: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if addr, ok := strings.CutPrefix(sc.Text(), "http "); ok {
			return strings.TrimSpace(addr), nil
		}
	}
	return "", fmt.Errorf("mesh: no http entrypoint in %s", f.Name())
}
