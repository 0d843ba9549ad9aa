// Command topology benchmarks topology-aware placement: a CPU-bound HTTP
// workload (`berth whoami`, GET /cpu?ms=N) served by
//
//  1. per-core pinned replicas (`mode: per-unit, unit: core`, one replica
//     pinned to each core, GOMAXPROCS = its CPUs),
//  2. the same number of unpinned replicas (`mode: replicated`, on the
//     shared pool), and
//  3. one unpinned instance with all CPUs,
//
// all in one `berth up` and one run, driven one after the other by the same
// Go load generator: a fixed number of connections for a fixed time, each
// sending requests back to back, spread round robin over the replicas' host
// ports (as a load balancer would). It reports throughput, p50 and p99 of
// each setup and their ratios, as markdown on stdout and in -out.
//
//	go run ./bench/topology [-duration 10s] [-rounds 3] [-concurrency 2×CPUs] [-ms 2] [-reserved-cpus LIST] [-out bench/topology/RESULTS.md]
//
// The three services are deployed together (an idle whoami uses no CPU) and
// measured in interleaved rounds, so that background load that comes and
// goes hits every setup alike; the report gives the median round of each.
//
// Run it as root from the repository root (tasks get cgroups). It builds
// ./cmd/berth unless -berth names a binary, talks to Berth only through the
// public API client, and on exit stops `berth up` by its pid (which stops the
// tasks) and removes its temporary directory and cgroup parent.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berth-project/berth/api"
)

type config struct {
	berth       string
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	ms          int
	rounds      int
	reserved    string
	out         string
}

func main() {
	var c config
	flag.StringVar(&c.berth, "berth", "", "berth binary to run (default: build ./cmd/berth)")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "measured load per setup and round")
	flag.DurationVar(&c.warmup, "warmup", 2*time.Second, "unmeasured load before each measurement")
	flag.IntVar(&c.concurrency, "concurrency", 2*runtime.NumCPU(), "connections sending requests back to back")
	flag.IntVar(&c.rounds, "rounds", 3, "measurements per setup, interleaved (pinned, unpinned, single, pinned, ...)")
	flag.IntVar(&c.ms, "ms", 2, "CPU milliseconds each request burns (whoami /cpu?ms=N)")
	flag.StringVar(&c.reserved, "reserved-cpus", "", "passed to berth up: CPUs no task runs on (run the benchmark itself there with taskset)")
	flag.StringVar(&c.out, "out", "bench/topology/RESULTS.md", "also write the report here (empty: stdout only)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "topology:", err)
		os.Exit(1)
	}
}

// setup is one way of serving the workload.
type setup struct {
	name, what string
	spec       string
}

// result is what one setup measured.
type result struct {
	setup
	replicas   int
	cpus       []string // each replica's CPU set ("shared" if unpinned)
	errors     int64
	throughput float64 // requests per second
	p50, p99   time.Duration
	cpuMs      float64 // mean CPU ms per request as reported by whoami
	ports      []int
	ids        []string // task ids, to notice replaced replicas
	replaced   int      // rounds before which a replica had been replaced
	rounds     []round
}

// round is one measurement window of a setup.
type round struct {
	throughput float64
	p50, p99   time.Duration
	errors     int64
	cpuMs      float64
}

func run(ctx context.Context, c config) error {
	tmp, err := os.MkdirTemp("", "berth-bench-topology-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if c.berth == "" {
		logf("building ./cmd/berth")
		c.berth = filepath.Join(tmp, "berth")
		if b, err := exec.CommandContext(ctx, "go", "build", "-o", c.berth, "./cmd/berth").CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/berth: %w\n%s", err, b)
		}
	}
	b, err := startBerth(ctx, c.berth, tmp, c.reserved)
	if err != nil {
		return err
	}
	defer b.stop()

	nodes, err := b.client.ListNodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Topology == nil {
		return fmt.Errorf("want one node with a topology, got %d nodes (%v)", len(nodes), err)
	}
	cores := len(nodes[0].Topology.Cores)
	logf("node %s: %d cores, %s online CPUs", nodes[0].Hostname, cores, nodes[0].Topology.Online)

	task := func(res string) string {
		return fmt.Sprintf(`task:
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports: [{name: http}]
  health: {http: {port: http, path: /healthz}, interval: 5s, retries: 5}
  resources: %s
`, res)
	}
	setups := []setup{
		{"pinned", fmt.Sprintf("%d replicas, one pinned to each core (per-unit core)", cores),
			"name: bench-pinned\nmode: per-unit\nunit: core\n" + task("{memory: 128MiB}")},
		{"unpinned", fmt.Sprintf("%d replicas on the shared pool (replicated)", cores),
			fmt.Sprintf("name: bench-unpinned\nreplicas: %d\n", cores) + task("{memory: 128MiB}")},
		{"single", "1 replica on the shared pool, all CPUs",
			"name: bench-single\nreplicas: 1\n" + task("{memory: 128MiB}")},
	}
	results := make([]result, len(setups))
	for i, s := range setups {
		r, err := deploy(ctx, b.client, s)
		defer remove(b.client, "bench-"+s.name)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		logf("%s: %d replicas healthy on CPUs %v", s.name, r.replicas, r.cpus)
		results[i] = r
	}
	for k := range c.rounds {
		for i := range results {
			r := &results[i]
			// A replica that was restarted (its health check failed under
			// load) has a new port: look again before every round.
			again, err := deploy(ctx, b.client, r.setup)
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			if !slices.Equal(again.ids, r.ids) {
				logf("round %d %s: replicas were replaced since the last round", k+1, r.name)
				r.replaced++
			}
			r.ports, r.ids = again.ports, again.ids
			load(ctx, r.ports, c, c.warmup)
			st := load(ctx, r.ports, c, c.duration)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rd := round{throughput: float64(len(st.lat)) / c.duration.Seconds(), errors: st.errors,
				p50: percentile(st.lat, 50), p99: percentile(st.lat, 99)}
			if len(st.lat) > 0 {
				rd.cpuMs = float64(st.cpuMs) / float64(len(st.lat))
			}
			r.rounds = append(r.rounds, rd)
			logf("round %d %s: %.0f req/s, p50 %v, p99 %v, %d errors", k+1, r.name, rd.throughput, rd.p50, rd.p99, rd.errors)
		}
	}
	for i := range results {
		results[i].summarize()
	}
	report := render(c, nodes[0], results)
	fmt.Print(report)
	if c.out != "" {
		if err := os.WriteFile(c.out, []byte(report), 0o644); err != nil {
			return err
		}
		logf("wrote %s", c.out)
	}
	return nil
}

// deploy deploys one setup and waits until its replicas are healthy.
func deploy(ctx context.Context, c *api.Client, s setup) (result, error) {
	r := result{setup: s}
	name := "bench-" + s.name
	logf("%s: deploying (%s)", s.name, s.what)
	if _, _, err := c.DeployService(ctx, name, []byte(s.spec), "application/yaml"); err != nil {
		return r, err
	}
	err := waitFor(ctx, 60*time.Second, func() (bool, error) {
		ts, err := c.ServiceTasks(ctx, name, false)
		if err != nil {
			return false, err
		}
		r.ports, r.cpus, r.ids = nil, nil, nil
		for _, t := range ts {
			if t.Status.State != api.TaskRunning || t.Status.Health != api.HealthHealthy {
				return false, nil
			}
			r.ports = append(r.ports, t.Ports["http"])
			r.ids = append(r.ids, t.ID)
			cpus := "shared"
			if t.Allocation != nil {
				cpus = t.Allocation.CPUs
			}
			r.cpus = append(r.cpus, cpus)
		}
		return len(ts) > 0, nil
	})
	r.replicas = len(r.ports)
	slices.Sort(r.cpus)
	slices.Sort(r.ids)
	return r, err
}

// remove removes a service and waits until its tasks are gone.
func remove(c *api.Client, name string) {
	ctx := context.Background()
	if err := c.RemoveService(ctx, name); err != nil {
		return
	}
	_ = waitFor(ctx, 60*time.Second, func() (bool, error) {
		ts, err := c.ServiceTasks(ctx, name, false)
		if api.IsNotFound(err) {
			return true, nil
		}
		return err == nil && len(ts) == 0, err
	})
}

// summarize takes the median round (by throughput) as the setup's result.
func (r *result) summarize() {
	rs := slices.Clone(r.rounds)
	slices.SortFunc(rs, func(a, b round) int {
		switch {
		case a.throughput < b.throughput:
			return -1
		case a.throughput > b.throughput:
			return 1
		}
		return 0
	})
	m := rs[len(rs)/2]
	r.throughput, r.p50, r.p99, r.cpuMs = m.throughput, m.p50, m.p99, m.cpuMs
	for _, x := range r.rounds {
		r.errors += x.errors
	}
}

type loadStats struct {
	lat    []time.Duration
	errors int64
	cpuMs  int64
}

// load runs cfg.concurrency connections against ports, round robin, for d.
func load(ctx context.Context, ports []int, cfg config, d time.Duration) loadStats {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: cfg.concurrency, MaxConnsPerHost: cfg.concurrency}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var next atomic.Uint64
	var mu sync.Mutex
	var all loadStats
	var wg sync.WaitGroup
	for range cfg.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine loadStats
			for ctx.Err() == nil {
				port := ports[next.Add(1)%uint64(len(ports))]
				url := fmt.Sprintf("http://127.0.0.1:%d/cpu?ms=%d", port, cfg.ms)
				start := time.Now()
				resp, err := client.Get(url)
				if err != nil {
					if ctx.Err() == nil {
						mine.errors++
					}
					continue
				}
				var body struct {
					CPUMs int64 `json:"cpu_ms"`
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					mine.errors++
					continue
				}
				if ctx.Err() != nil {
					break // a request cut by the end of the window is not counted
				}
				mine.lat = append(mine.lat, time.Since(start))
				if err := json.Unmarshal(b, &body); err == nil {
					mine.cpuMs += body.CPUMs
				}
			}
			mu.Lock()
			all.lat = append(all.lat, mine.lat...)
			all.errors += mine.errors
			all.cpuMs += mine.cpuMs
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all
}

// percentile is the nearest-rank percentile of lat.
func percentile(lat []time.Duration, p int) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(i, 0)]
}

func render(c config, n api.Node, rs []result) string {
	var b strings.Builder
	host, _ := os.Hostname()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "# Topology benchmark\n\n")
	fmt.Fprintf(&b, "`go run ./bench/topology -duration %v -concurrency %d -ms %d` on %s, %s, Go %s, %d CPUs (%s online, %d cores, %d NUMA nodes), load average %s.\n\n",
		c.duration, c.concurrency, c.ms, host, time.Now().UTC().Format("2006-01-02 15:04 UTC"), strings.TrimPrefix(runtime.Version(), "go"),
		runtime.NumCPU(), n.Topology.Online, len(n.Topology.Cores), len(n.Topology.NUMANodes), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(&b, "Each request burns %d ms of CPU in `berth whoami` (GET /cpu); %d connections send requests back to back, round robin over the replicas, for %v after a %v warm-up; %d interleaved rounds, the median round (by throughput) shown. The load generator runs on the same machine.\n\n", c.ms, c.concurrency, c.duration, c.warmup, c.rounds)
	fmt.Fprintf(&b, "| setup | replicas | CPUs | requests/s | p50 | p99 | CPU ms per request | errors | replaced | requests/s of each round |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		var each []string
		for _, x := range r.rounds {
			each = append(each, fmt.Sprintf("%.0f", x.throughput))
		}
		fmt.Fprintf(&b, "| %s: %s | %d | %s | %.0f | %v | %v | %.2f | %d | %d | %s |\n", r.name, r.what, r.replicas, strings.Join(r.cpus, ", "),
			r.throughput, r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.cpuMs, r.errors, r.replaced, strings.Join(each, ", "))
	}
	if len(rs) == 3 && rs[1].throughput > 0 && rs[2].throughput > 0 {
		fmt.Fprintf(&b, "\nRatios: pinned / unpinned throughput %.3f, p99 %.3f; pinned / single throughput %.3f, p99 %.3f.\n",
			rs[0].throughput/rs[1].throughput, ratio(rs[0].p99, rs[1].p99),
			rs[0].throughput/rs[2].throughput, ratio(rs[0].p99, rs[2].p99))
	}
	return b.String()
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// waitFor polls cond every 100 ms until it holds, fails or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("not done within %v (last error: %v)", timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// instance is the `berth up` this program runs.
type instance struct {
	cmd      *exec.Cmd
	exited   chan struct{}
	client   *api.Client
	cgParent string
}

func startBerth(ctx context.Context, bin, tmp, reserved string) (*instance, error) {
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	b := &instance{cgParent: "berth-bench-topo-" + hex.EncodeToString(suffix), exited: make(chan struct{})}
	data := filepath.Join(tmp, "data")
	logPath := filepath.Join(tmp, "berth-up.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	args := []string{"up", "--data-dir", data, "--listen", "127.0.0.1:0", "--cgroup-parent", b.cgParent, "--log-level", "warn"}
	if reserved != "" {
		args = append(args, "--reserved-cpus", reserved)
	}
	b.cmd = exec.Command(bin, args...)
	b.cmd.Stdout, b.cmd.Stderr = logFile, logFile
	b.cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + tmp}
	if err := b.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = b.cmd.Wait(); close(b.exited) }()
	logf("berth up started (pid %d)", b.cmd.Process.Pid)
	err = waitFor(ctx, 60*time.Second, func() (bool, error) {
		select {
		case <-b.exited:
			log, _ := os.ReadFile(logPath)
			return false, fmt.Errorf("berth up exited:\n%s", log)
		default:
		}
		read := func(name string) string {
			v, _ := os.ReadFile(filepath.Join(data, name))
			return strings.TrimSpace(string(v))
		}
		addr, token, ca := read("api.addr"), read("admin.token"), read("ca.pem")
		if addr == "" || token == "" || ca == "" {
			return false, nil
		}
		c, err := api.NewClient(api.ClientConfig{Addr: addr, Token: token, CACertPEM: []byte(ca)})
		if err != nil {
			return false, err
		}
		if nodes, err := c.ListNodes(ctx); err != nil || len(nodes) == 0 {
			return false, err
		}
		b.client = c
		return true, nil
	})
	if err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

// stop ends `berth up` (SIGTERM stops its tasks; SIGKILL after 90 s) and
// removes its cgroup parent.
func (b *instance) stop() {
	select {
	case <-b.exited:
	default:
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.exited:
		case <-time.After(90 * time.Second):
			_ = b.cmd.Process.Kill()
			<-b.exited
		}
	}
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", b.cgParent))
	for _, d := range dirs {
		if err := removeTree(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			logf("cannot remove cgroup %s: %v", d, err)
		}
	}
}

// removeTree removes an (empty) cgroup directory tree, deepest first.
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return os.Remove(dir)
}
