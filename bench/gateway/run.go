package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// proc is a process the benchmark started, stopped by its pid.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan error
}

// startProc starts name; if ready is not nil it reads the first line of
// stdout and hands it over.
func startProc(name string, logDir string, argv []string, firstLine *string) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	logf, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	var out io.ReadCloser
	if firstLine != nil {
		if out, err = cmd.StdoutPipe(); err != nil {
			logf.Close()
			return nil, err
		}
	} else {
		cmd.Stdout = logf
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the benchmark
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan error, 1)}
	if firstLine != nil {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			p.stop()
			return nil, fmt.Errorf("%s: no first line: %w (see %s.log)", name, err, name)
		}
		*firstLine = strings.TrimSpace(line)
		go io.Copy(io.Discard, out)
	}
	go func() { p.done <- cmd.Wait(); logf.Close() }()
	return p, nil
}

// stop sends SIGTERM to the recorded pid, then SIGKILL after 5 s.
func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// waitHTTP polls url until it answers 200.
func waitHTTP(url string, within time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(within)
	for {
		resp, err := c.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", url, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// spread checks that 30 requests through url reach all the backends.
func spread(url string, names []string) error {
	c := &http.Client{Timeout: 5 * time.Second}
	seen := map[string]int{}
	for i := 0; i < 30; i++ {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, n := range names {
			if strings.Contains(string(b), `"name":"`+n+`"`) {
				seen[n]++
			}
		}
	}
	for _, n := range names {
		if seen[n] == 0 {
			return fmt.Errorf("%s: backend %s got none of 30 requests: %v", url, n, seen)
		}
	}
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// result is one wrk run.
type result struct {
	rps      float64
	p50, p99 time.Duration
	requests int64
	errors   int64   // socket errors + non-2xx/3xx
	cpuUS    float64 // CPU time of the target's processes per request, µs
}

// cpuTicks returns the user+system CPU time of pid and its children, in
// clock ticks (USER_HZ, 100 per second on Linux).
func cpuTicks(pid int) int64 {
	total := int64(0)
	pids := []int{pid}
	if entries, err := os.ReadDir("/proc"); err == nil {
		for _, e := range entries {
			child, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if f := procStat(child); len(f) > 1 && f[1] == strconv.Itoa(pid) {
				pids = append(pids, child)
			}
		}
	}
	for _, p := range pids {
		f := procStat(p)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		total += u + s
	}
	return total
}

// procStat returns the fields of /proc/pid/stat after the command name
// (state, ppid, ...).
func procStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

var (
	reRPS  = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reP50  = regexp.MustCompile(`\n\s+50%\s+([0-9.]+)(us|ms|s)`)
	reP99  = regexp.MustCompile(`\n\s+99%\s+([0-9.]+)(us|ms|s)`)
	reReq  = regexp.MustCompile(`(\d+) requests in`)
	reNon2 = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reSock = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func parseWrk(out string) (result, error) {
	var r result
	m := reRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no Requests/sec in wrk output:\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	dur := func(re *regexp.Regexp) time.Duration {
		m := re.FindStringSubmatch(out)
		if m == nil {
			return 0
		}
		f, _ := strconv.ParseFloat(m[1], 64)
		unit := map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9}[m[2]]
		return time.Duration(f * unit)
	}
	r.p50, r.p99 = dur(reP50), dur(reP99)
	if m := reReq.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reNon2.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.errors += n
	}
	if m := reSock.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.errors += n
		}
	}
	return r, nil
}

func wrk(ctx context.Context, bin, url string, threads, conns int, d time.Duration) (result, string, error) {
	args := []string{"-t" + strconv.Itoa(threads), "-c" + strconv.Itoa(conns), "-d" + d.String(), "--latency", url}
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return result{}, string(out), fmt.Errorf("wrk: %w\n%s", err, out)
	}
	r, err := parseWrk(string(out))
	return r, string(out), err
}

const haproxyCfg = `global
    maxconn 8000
    nbthread 2
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    option forwardfor
    http-reuse always
frontend fe
    bind 127.0.0.1:{{.Port}}
    unique-id-format %{+X}o\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
    unique-id-header X-Request-Id
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend whoami
backend whoami
    balance roundrobin
{{- range $i, $b := .Backends}}
    server s{{$i}} {{$b}}
{{- end}}
`

const nginxCfg = `worker_processes 2;
daemon off;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/nginx-error.log warn;
events { worker_connections 10000; }
http {
    access_log off;
    client_body_temp_path {{.Dir}}/nginx-body;
    proxy_temp_path {{.Dir}}/nginx-proxy;
    fastcgi_temp_path {{.Dir}}/nginx-fastcgi;
    uwsgi_temp_path {{.Dir}}/nginx-uwsgi;
    scgi_temp_path {{.Dir}}/nginx-scgi;
    upstream whoami {
{{- range .Backends}}
        server {{.}};
{{- end}}
        keepalive 256;
    }
    server {
        listen 127.0.0.1:{{.Port}};
        location / {
            proxy_pass http://whoami;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Request-Id $request_id;
        }
    }
}
`

func render(tmpl string, data any) (string, error) {
	var b strings.Builder
	if err := template.Must(template.New("").Parse(tmpl)).Execute(&b, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

// target is one thing under load.
type target struct {
	name string
	url  string
	pid  int // whose CPU time (with its children's) is the target's
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	berth := fs.String("berth", "", "path of the berth binary (for `berth whoami`)")
	self := fs.String("self", "", "path of this binary (default: os.Executable)")
	duration := fs.Duration("duration", 10*time.Second, "length of each measured wrk run")
	warmup := fs.Duration("warmup", 3*time.Second, "length of the wrk warm-up before each run")
	rounds := fs.Int("rounds", 5, "rounds of all targets, in turn (each round starts one target later)")
	threads := fs.Int("threads", 2, "wrk threads")
	conns := fs.Int("conns", 64, "wrk connections")
	outPath := fs.String("out", "bench/gateway/RESULTS.md", "results file")
	withLog := fs.Bool("access-log", true, "also measure Berth with its access log on")
	abbaN := fs.Int("abba", 12, "blocks of Berth, HAProxy, HAProxy, Berth short runs after the rounds (0: none)")
	abbaDur := fs.Duration("abba-duration", 3*time.Second, "length of each run of an ABBA block")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *berth == "" {
		return errors.New("run: -berth is required")
	}
	if *self == "" {
		var err error
		if *self, err = os.Executable(); err != nil {
			return err
		}
	}
	tools := map[string]string{}
	for _, t := range []string{"wrk", "haproxy", "nginx"} {
		p, err := exec.LookPath(t)
		if err != nil {
			return fmt.Errorf("%s is not installed (run.sh installs it): %w", t, err)
		}
		tools[t] = p
	}
	dir, err := os.MkdirTemp("", "benchgateway-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var all []*proc
	defer func() {
		for i := len(all) - 1; i >= 0; i-- {
			all[i].stop()
		}
	}()
	start := func(name string, argv []string, firstLine *string) (*proc, error) {
		p, err := startProc(name, dir, argv, firstLine)
		if err == nil {
			all = append(all, p)
		}
		return p, err
	}

	// Three whoami backends.
	var backends, names []string
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("whoami-%d", i)
		var line string
		if _, err := start(name, []string{*berth, "whoami", "--port", "0", "--name", name}, &line); err != nil {
			return err
		}
		f := strings.Fields(line) // "whoami NAME listening on ADDR"
		if len(f) < 1 {
			return fmt.Errorf("%s: odd first line %q", name, line)
		}
		backends = append(backends, f[len(f)-1])
		names = append(names, name)
	}
	for _, b := range backends {
		if err := waitHTTP("http://"+b+"/", 10*time.Second); err != nil {
			return err
		}
	}

	targets := []*target{{name: "whoami direct", url: "http://" + backends[0] + "/", pid: all[0].cmd.Process.Pid}}
	addGateway := func(name string, extra ...string) error {
		var line string
		argv := append([]string{*self, "serve", "-listen", "127.0.0.1:0", "-backends", strings.Join(backends, ",")}, extra...)
		p, err := start(strings.ReplaceAll(strings.ReplaceAll(name, " ", "-"), ",", ""), argv, &line)
		if err != nil {
			return err
		}
		f := strings.Fields(line)
		targets = append(targets, &target{name: name, url: "http://" + f[len(f)-1] + "/", pid: p.cmd.Process.Pid})
		return nil
	}
	if err := addGateway("Berth gateway"); err != nil {
		return err
	}
	if *withLog {
		if err := addGateway("Berth gateway, access log on", "-access-log"); err != nil {
			return err
		}
	}
	data := struct {
		Port     int
		Dir      string
		Backends []string
	}{Dir: dir, Backends: backends}
	if data.Port, err = freePort(); err != nil {
		return err
	}
	hcfg, err := render(haproxyCfg, data)
	if err != nil {
		return err
	}
	hpath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(hpath, []byte(hcfg), 0o600); err != nil {
		return err
	}
	hp, err := start("haproxy", []string{tools["haproxy"], "-db", "-f", hpath}, nil)
	if err != nil {
		return err
	}
	targets = append(targets, &target{name: "HAProxy", url: fmt.Sprintf("http://127.0.0.1:%d/", data.Port), pid: hp.cmd.Process.Pid})
	if data.Port, err = freePort(); err != nil {
		return err
	}
	ncfg, err := render(nginxCfg, data)
	if err != nil {
		return err
	}
	npath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(npath, []byte(ncfg), 0o600); err != nil {
		return err
	}
	ng, err := start("nginx", []string{tools["nginx"], "-p", dir, "-c", npath}, nil)
	if err != nil {
		return err
	}
	targets = append(targets, &target{name: "nginx", url: fmt.Sprintf("http://127.0.0.1:%d/", data.Port), pid: ng.cmd.Process.Pid})

	for _, t := range targets {
		if err := waitHTTP(t.url, 10*time.Second); err != nil {
			return fmt.Errorf("%s: %w\nlogs:\n%s", t.name, err, logTails(dir))
		}
		if t.name != "whoami direct" {
			if err := spread(t.url, names); err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
		}
	}

	ctx := context.Background()
	loadBefore := loadAvg()
	results := map[string][]result{}
	for round := 1; round <= *rounds; round++ {
		// Each round starts one target later, so that every target runs
		// in every position (first, after the direct run, last...) as
		// often as the others: the machine's speed drifts over minutes.
		for i := range targets {
			t := targets[(i+round-1)%len(targets)]
			if _, _, err := wrk(ctx, tools["wrk"], t.url, *threads, *conns, *warmup); err != nil {
				return fmt.Errorf("%s warm-up: %w", t.name, err)
			}
			before := cpuTicks(t.pid)
			r, _, err := wrk(ctx, tools["wrk"], t.url, *threads, *conns, *duration)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			if r.requests > 0 {
				r.cpuUS = float64(cpuTicks(t.pid)-before) * 1e4 / float64(r.requests) // ticks are 10 ms
			}
			fmt.Printf("round %d  %-30s %10.0f req/s  p50 %-9s p99 %-9s cpu %5.1f µs/req  errors %d\n",
				round, t.name, r.rps, r.p50, r.p99, r.cpuUS, r.errors)
			results[t.name] = append(results[t.name], r)
		}
	}
	var blocks []abbaBlock
	if *abbaN > 0 {
		var berthT, hapT *target
		for _, t := range targets {
			switch t.name {
			case "Berth gateway":
				berthT = t
			case "HAProxy":
				hapT = t
			}
		}
		for i := 1; i <= *abbaN; i++ {
			var blk abbaBlock
			for j, t := range []*target{berthT, hapT, hapT, berthT} {
				r, _, err := wrk(ctx, tools["wrk"], t.url, *threads, *conns, *abbaDur)
				if err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
				if t == berthT {
					blk.berth[j/3] = r
				} else {
					blk.hap[j-1] = r
				}
			}
			fmt.Printf("ABBA block %d  Berth %.0f, %.0f req/s  HAProxy %.0f, %.0f req/s  ratio %.2f\n",
				i, blk.berth[0].rps, blk.berth[1].rps, blk.hap[0].rps, blk.hap[1].rps, blk.ratio())
			blocks = append(blocks, blk)
		}
	}
	versions := map[string]string{
		"haproxy": firstLine(exec.Command(tools["haproxy"], "-v")),
		"nginx":   firstLine(exec.Command(tools["nginx"], "-v")),
		"wrk":     firstLine(exec.Command(tools["wrk"], "-v")),
		"kernel":  firstLine(exec.Command("uname", "-r")),
		"go":      runtime.Version(),
		"cpus":    strconv.Itoa(runtime.NumCPU()),
		"cpu":     cpuModel(),
		"load":    loadBefore + " before, " + loadAvg() + " after",
	}
	md := report(targets, results, versions, *threads, *conns, *duration, *warmup, *rounds, hcfg, ncfg, dir)
	if len(blocks) > 0 {
		md = strings.Replace(md, "\n## Every round", abbaReport(blocks, *abbaDur)+"\n## Every round", 1)
	}
	if err := os.WriteFile(*outPath, []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Printf("results written to %s\n", *outPath)
	return nil
}

// logTails returns the end of every log in dir, for errors (the directory
// is removed on exit).
func logTails(dir string) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if len(data) > 2000 {
			data = data[len(data)-2000:]
		}
		if len(data) > 0 {
			fmt.Fprintf(&b, "== %s\n%s\n", filepath.Base(f), data)
		}
	}
	return b.String()
}

func firstLine(cmd *exec.Cmd) string {
	out, _ := cmd.CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// median returns the round with the median throughput.
func median(rs []result) result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int {
		switch {
		case a.rps < b.rps:
			return -1
		case a.rps > b.rps:
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}

// abbaBlock is four short runs back to back: Berth, HAProxy, HAProxy,
// Berth. A drift of the machine's speed that is linear over the block
// cancels out of its ratio.
type abbaBlock struct{ berth, hap [2]result }

// ratio is Berth's throughput over HAProxy's in the block.
func (b abbaBlock) ratio() float64 {
	h := b.hap[0].rps + b.hap[1].rps
	if h == 0 {
		return 0
	}
	return (b.berth[0].rps + b.berth[1].rps) / h
}

// p99Ratio is Berth's mean p99 over HAProxy's in the block.
func (b abbaBlock) p99Ratio() float64 {
	h := b.hap[0].p99 + b.hap[1].p99
	if h == 0 {
		return 0
	}
	return float64(b.berth[0].p99+b.berth[1].p99) / float64(h)
}

// abbaReport is the report's section on the ABBA blocks.
func abbaReport(blocks []abbaBlock, d time.Duration) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	var ratios, p99s []float64
	ahead, logSum := 0, 0.0
	for _, blk := range blocks {
		r := blk.ratio()
		ratios = append(ratios, r)
		p99s = append(p99s, blk.p99Ratio())
		if r > 1 {
			ahead++
		}
		if r > 0 {
			logSum += math.Log(r)
		}
	}
	n := len(blocks)
	w("## Berth and HAProxy side by side (ABBA blocks)\n\n")
	w("After the rounds, %d blocks of four back-to-back `wrk` runs of %s each, in the order Berth, HAProxy, HAProxy,\n", n, d)
	w("Berth (no warm-up between: both were warm). Within a block the runs are seconds apart, and a drift of the\n")
	w("machine's speed that is linear over the block cancels out of its ratio (Berth's two req/s over HAProxy's two).\n\n")
	w("**Throughput, Berth / HAProxy: median %.2f, geometric mean %.2f, min %.2f, max %.2f; Berth ahead in %d of %d\n",
		medianFloat(ratios), math.Exp(logSum/float64(n)), slices.Min(ratios), slices.Max(ratios), ahead, n)
	w("blocks** (two-sided sign test p = %.2f). p99, Berth / HAProxy: median %.2f.\n\n", signTest(ahead, n), medianFloat(p99s))
	w("| block | Berth req/s | HAProxy req/s | HAProxy req/s | Berth req/s | req/s ratio | p99 ratio |\n")
	w("|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, blk := range blocks {
		w("| %d | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f |\n", i+1, blk.berth[0].rps, blk.hap[0].rps, blk.hap[1].rps,
			blk.berth[1].rps, blk.ratio(), blk.p99Ratio())
	}
	return b.String()
}

// signTest is the two-sided p-value of k successes in n fair coin tosses.
func signTest(k, n int) float64 {
	if n == 0 {
		return 1
	}
	tail := func(lo, hi int) float64 {
		p := 0.0
		for i := lo; i <= hi; i++ {
			p += binom(n, i)
		}
		return p / math.Pow(2, float64(n))
	}
	p := 2 * math.Min(tail(0, k), tail(k, n))
	return math.Min(p, 1)
}

func binom(n, k int) float64 {
	r := 1.0
	for i := 1; i <= k; i++ {
		r = r * float64(n-k+i) / float64(i)
	}
	return r
}

// pairedRatios divides each round's req/s by the reference's in the same
// round.
func pairedRatios(rs, ref []result) []float64 {
	var out []float64
	for i := range min(len(rs), len(ref)) {
		if ref[i].rps > 0 {
			out = append(out, rs[i].rps/ref[i].rps)
		}
	}
	if len(out) == 0 {
		out = []float64{0}
	}
	return out
}

// medianFloat returns the median of xs (the mean of the middle two for an
// even count).
func medianFloat(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func report(targets []*target, results map[string][]result, v map[string]string, threads, conns int,
	d, warmup time.Duration, rounds int, hcfg, ncfg, dir string) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Gateway benchmark: Berth beside HAProxy and nginx\n\n")
	w("Written by `bench/gateway/run.sh` on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	w("**Everything shares the same %s CPUs** (%s): wrk, the proxy under test and the three `berth whoami`\n", v["cpus"], v["cpu"])
	w("backends run on one machine at once, so a proxy's throughput is bounded by what the load generator and the\n")
	w("backends leave it. Linux %s, %s, %s, %s, wrk: %s.\n\n", v["kernel"], v["go"], v["haproxy"], v["nginx"], v["wrk"])
	w("Load average (1, 5, 15 min) of the machine: %s the runs — other work on the machine shows here.\n\n", v["load"])
	w("Load: `wrk -t%d -c%d -d%s --latency` on `GET /` (a %s warm-up before each run), %d rounds with the targets in turn (each round starting one target later);\n",
		threads, conns, d, warmup, rounds)
	w("the table shows each target's median round by throughput. Every proxy has the same three backends, round robin,\n")
	w("keep-alive to the backends, adds X-Forwarded-For/-Proto/-Host and a request id, and writes no access log\n")
	w("(except the row that says so). Configs are below.\n\n")

	hap := median(results["HAProxy"])
	w("| target | req/s | p50 | p99 | req/s vs HAProxy | p99 vs HAProxy | req/s vs HAProxy per round: median (min–max) | CPU µs/req | errors |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, t := range targets {
		r := median(results[t.name])
		pr := pairedRatios(results[t.name], results["HAProxy"])
		w("| %s | %.0f | %s | %s | %.2f | %.2f | %.2f (%.2f–%.2f) | %.1f | %d |\n", t.name, r.rps, ms(r.p50), ms(r.p99),
			r.rps/hap.rps, float64(r.p99)/float64(hap.p99), medianFloat(pr), slices.Min(pr), slices.Max(pr), r.cpuUS, r.errors)
	}
	w("\nRatios: above 1.00 in req/s is faster than HAProxy; below 1.00 in p99 is a better tail. The per-round column\n")
	w("divides each round's req/s by HAProxy's in the same round (runs minutes apart see different machine speeds; a\n")
	w("round's runs are closest in time). CPU µs/req is the\n")
	w("user+system time of the target's own processes (the proxy, or the one whoami for \"direct\") per request\n")
	w("(from /proc, 10 ms ticks): what the proxy costs, less sensitive to other load than req/s.\n\n")
	w("## Every round\n\n| round | target | req/s | p50 | p99 | CPU µs/req | requests | errors |\n|---:|---|---:|---:|---:|---:|---:|---:|\n")
	for i := 0; i < rounds; i++ {
		for _, t := range targets {
			if i < len(results[t.name]) {
				r := results[t.name][i]
				w("| %d | %s | %.0f | %s | %s | %.1f | %d | %d |\n", i+1, t.name, r.rps, ms(r.p50), ms(r.p99), r.cpuUS, r.requests, r.errors)
			}
		}
	}
	w("\n## Configs\n\nBerth: `benchgateway serve` — `gateway.New` with an HTTP entrypoint and one route `/` (any host) to the three\n")
	w("backends, policy round-robin, default options (keep-alive connections to the backends, up to 256 idle per backend).\n\n")
	w("HAProxy (`haproxy -db -f haproxy.cfg`):\n\n```\n%s```\n\nnginx (`nginx -p DIR -c nginx.conf`):\n\n```\n%s```\n",
		hcfg, strings.ReplaceAll(ncfg, dir, "DIR"))
	return b.String()
}
