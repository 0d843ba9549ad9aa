// Command convergence measures Berth end to end on one machine: how long a
// 100-replica service takes to be running and healthy, how long one task
// takes to start compared with a bare fork/exec of the same program, and how
// much memory an idle `berth up` holds. It prints a markdown report.
//
// It is a client of the public API only (package api): it must not import
// anything under internal/, so it measures what a user would see. It starts
// one `berth up` on a temporary data directory and a cgroup parent of its
// own, and removes both, and every process it started, when it ends.
//
// Run it from the repository root:
//
//	go run ./bench/convergence [-runs 3] [-start-runs 50] [-berth PATH]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/berth-project/berth/api"
)

// config holds the flags.
type config struct {
	berth           string
	example         string
	runs            int
	replicas        int
	healthInterval  time.Duration
	startPeriod     time.Duration
	overhead        time.Duration
	convergePoll    time.Duration
	convergeTimeout time.Duration
	startRuns       int
	startPoll       time.Duration
	probeEvery      time.Duration
	rssWindow       time.Duration
	settle          time.Duration
	logLevel        string
	keepLog         string
	meshFlips       int
	meshLife        time.Duration
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("convergence", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.berth, "berth", "", "berth binary to benchmark (default: go build ./cmd/berth into a temp dir)")
	fs.StringVar(&c.example, "example", "examples/hello.yaml", "spec deployed for the idle-RSS measurement")
	fs.IntVar(&c.runs, "runs", 3, "convergence runs (a fresh service each)")
	fs.IntVar(&c.replicas, "replicas", 100, "replicas of the convergence service")
	fs.DurationVar(&c.healthInterval, "health-interval", 250*time.Millisecond, "health check interval of the convergence service")
	fs.DurationVar(&c.startPeriod, "start-period", 0, "health check start period of the convergence service (failures before it do not count)")
	fs.DurationVar(&c.overhead, "overhead", 3*time.Second, "after the last convergence run, measure berth CPU this long without and with polling (0: skip)")
	fs.DurationVar(&c.convergePoll, "poll", 20*time.Millisecond, "API poll interval while converging")
	fs.DurationVar(&c.convergeTimeout, "timeout", 120*time.Second, "limit of one convergence run")
	fs.IntVar(&c.startRuns, "start-runs", 50, "start-latency runs (and as many bare fork/exec runs)")
	fs.DurationVar(&c.startPoll, "start-poll", 5*time.Millisecond, "API poll interval while measuring start latency")
	fs.DurationVar(&c.probeEvery, "probe", time.Millisecond, "TCP connect retry interval")
	fs.DurationVar(&c.rssWindow, "rss-window", 10*time.Second, "how long to sample idle RSS")
	fs.DurationVar(&c.settle, "settle", 5*time.Second, "wait this long after the example is healthy before sampling RSS")
	fs.StringVar(&c.logLevel, "berth-log-level", "info", "log level of berth up")
	fs.StringVar(&c.keepLog, "keep-log", "", "copy the berth up log to this file at the end")
	fs.IntVar(&c.meshFlips, "mesh-flips", 20, "mesh update latency: how many tasks turn unhealthy (0: skip)")
	fs.DurationVar(&c.meshLife, "mesh-life", 2*time.Second, "mesh update latency: how long a task stays healthy")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case c.runs < 1 || c.startRuns < 1 || c.replicas < 1:
		return c, errors.New("-runs, -start-runs and -replicas must be at least 1")
	case c.convergePoll <= 0 || c.startPoll <= 0 || c.probeEvery <= 0:
		return c, errors.New("poll and probe intervals must be positive")
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "convergence:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log, os.Stdout); err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "convergence: ") {
			msg = "convergence: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
}

// results is everything measured, for the report.
type results struct {
	machine     machine
	berthBin    string
	berthSize   int64
	startup     time.Duration
	rss         rssResult
	rssAfter    rssResult
	converge    []convergenceRun
	start       []startRun
	bare        []time.Duration
	shutdown    time.Duration
	berthCPUAll time.Duration
	mesh        *meshResult
}

func run(ctx context.Context, cfg config, log *slog.Logger, out io.Writer) (err error) {
	res := results{machine: describeMachine()}
	example, err := filepath.Abs(cfg.example)
	if err != nil {
		return err
	}
	exampleDoc, err := os.ReadFile(example)
	if err != nil {
		return fmt.Errorf("example spec: %w (run from the repository root or pass -example)", err)
	}
	exampleSpec, err := api.ParseServiceSpec(exampleDoc)
	if err != nil {
		return fmt.Errorf("example spec %s: %w", example, err)
	}
	exampleSpec.Normalize()
	tmp, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	bin := cfg.berth
	if bin == "" {
		log.Info("building berth")
		if bin, err = buildBerth(ctx, tmp); err != nil {
			return err
		}
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	res.berthBin = bin
	if st, err := os.Stat(bin); err == nil {
		res.berthSize = st.Size()
	}

	t0 := time.Now()
	in, err := startBerth(ctx, log, bin, tmp, cfg.logLevel, []string{example}, 60*time.Second)
	if in != nil {
		defer func() {
			sd, serr := in.stop(90 * time.Second)
			res.shutdown = sd
			if cerr := in.cleanup(); cerr != nil {
				log.Error("cleanup", "err", cerr)
				serr = errors.Join(serr, cerr)
			}
			if cfg.keepLog != "" {
				if b, rerr := os.ReadFile(in.logPath); rerr == nil {
					_ = os.WriteFile(cfg.keepLog, b, 0o644)
				}
			}
			if err != nil {
				printLogTail(in.logPath, 30)
			}
			err = errors.Join(err, serr)
		}()
	}
	if err != nil {
		return err
	}
	res.startup = time.Since(t0)
	log.Info("berth up is ready", "after", res.startup)

	// c. Idle RSS first, on a fresh process, with the example running.
	exampleName := exampleSpec.Name
	hello, err := waitHealthy(ctx, in.client, exampleName, exampleSpec.ReplicaCount(), 60*time.Second)
	if err != nil {
		return fmt.Errorf("waiting for the example service: %w", err)
	}
	log.Info("example healthy; settling, then sampling RSS", "settle", cfg.settle, "window", cfg.rssWindow)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(cfg.settle):
	}
	if res.rss, err = measureRSS(ctx, in, cfg.rssWindow); err != nil {
		return err
	}
	var helloPIDs []int
	for _, t := range hello {
		helloPIDs = append(helloPIDs, t.Status.PID)
		if kb, err := statusKB(t.Status.PID, "VmRSS"); err == nil {
			res.rss.WhoamiKB = append(res.rss.WhoamiKB, kb)
			anon, _ := statusKB(t.Status.PID, "RssAnon")
			res.rss.WhoamiAnonKB = append(res.rss.WhoamiAnonKB, anon)
		}
	}
	if _, err := removeAndWait(ctx, in.client, exampleName, helloPIDs, 60*time.Second); err != nil {
		return err
	}

	// a. Convergence of many replicas.
	for i := range cfg.runs {
		name := fmt.Sprintf("conv-%d", i+1)
		log.Info("convergence run", "service", name, "replicas", cfg.replicas)
		overhead := time.Duration(0)
		if i == cfg.runs-1 {
			overhead = cfg.overhead
		}
		r, err := measureConvergence(ctx, in, name, cfg.replicas, cfg.healthInterval, cfg.startPeriod, cfg.convergePoll, cfg.convergeTimeout, overhead)
		if err != nil {
			return err
		}
		log.Info("converged", "service", name, "total", r.Total, "all_running", r.AllRunning, "teardown", r.Teardown)
		res.converge = append(res.converge, r)
	}

	// b. Start latency, interleaved with the bare fork/exec baseline so that
	// drifting background load hits both alike.
	log.Info("start latency", "runs", cfg.startRuns)
	for i := range cfg.startRuns {
		r, err := measureStart(ctx, in, fmt.Sprintf("lat-%d", i+1), cfg.startPoll, cfg.probeEvery, 60*time.Second)
		if err != nil {
			return err
		}
		res.start = append(res.start, r)
		b, err := measureBare(ctx, bin, cfg.probeEvery, 30*time.Second)
		if err != nil {
			return err
		}
		res.bare = append(res.bare, b)
	}

	// d. Mesh update latency: health changes to the gateway.
	if cfg.meshFlips > 0 {
		log.Info("mesh update latency", "flips", cfg.meshFlips)
		m, err := measureMesh(ctx, in, cfg.meshFlips, cfg.meshLife)
		if err != nil {
			return err
		}
		res.mesh = &m
	}

	// RSS again, now that the process has done all of the above.
	if res.rssAfter, err = measureRSS(ctx, in, 3*time.Second); err != nil {
		return err
	}
	if c, err := cpuTime(in.pid()); err == nil {
		res.berthCPUAll = c
	}
	res.machine.LoadAfter = loadavg()

	// Stop now so the report has the shutdown time; the deferred stop is
	// then a no-op.
	if res.shutdown, err = in.stop(90 * time.Second); err != nil {
		return err
	}
	return report(out, cfg, res)
}

// printLogTail copies the last n lines of the berth log to stderr.
func printLogTail(path string, n int) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	fmt.Fprintf(os.Stderr, "--- last %d lines of the berth up log ---\n%s\n", len(lines), strings.Join(lines, "\n"))
}
