package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// report writes the results as markdown.
func report(w io.Writer, cfg config, res results) error {
	var b strings.Builder
	m := res.machine
	fmt.Fprintf(&b, "# Berth convergence benchmark\n\n")
	fmt.Fprintf(&b, "| machine | |\n|---|---|\n")
	fmt.Fprintf(&b, "| date (UTC) | %s |\n", m.Date.Format(time.RFC3339))
	fmt.Fprintf(&b, "| nproc | %d |\n", m.NumCPU)
	fmt.Fprintf(&b, "| CPU model | %s |\n", m.CPUModel)
	fmt.Fprintf(&b, "| memory | %.1f GiB |\n", float64(m.MemTotalKB)/(1<<20))
	fmt.Fprintf(&b, "| kernel | %s, cgroups %s |\n", m.Kernel, m.CgroupsInfo)
	fmt.Fprintf(&b, "| Go | %s |\n", m.GoVersion)
	fmt.Fprintf(&b, "| load average before / after | %s / %s |\n", m.LoadBefore, m.LoadAfter)
	fmt.Fprintf(&b, "| berth binary | %.1f MB |\n", float64(res.berthSize)/1e6)
	fmt.Fprintf(&b, "| berth up ready after | %s s (process start → API answers and node ready) |\n", secs(res.startup))
	fmt.Fprintf(&b, "| berth up stopped in | %s s (SIGTERM → exit, no tasks left) |\n\n", secs(res.shutdown))

	// a.
	hc := fmt.Sprintf("HTTP health check every %s", cfg.healthInterval)
	if cfg.startPeriod > 0 {
		hc += fmt.Sprintf(", start period %s", cfg.startPeriod)
	} else {
		hc += ", no start period"
	}
	fmt.Fprintf(&b, "## a. Convergence: %d replicas, %s\n\n", cfg.replicas, hc)
	fmt.Fprintf(&b, "Time from the deploy API call. \"all …\" columns are when the API poll (every %s) first saw every task in that state; "+
		"\"stamp\" columns are the latest task timestamps written by the orchestrator (created) and the agent (started, healthy), without poll delay. "+
		"\"replaced\" counts tasks that failed and were replaced during the run. "+
		"CPU columns are CPU time used during the run by the `berth up` process and by all task processes.\n\n", cfg.convergePoll)
	fmt.Fprintf(&b, "| run | PUT | all created | all assigned | all running | **all healthy** | created stamp | started stamp | healthy stamp | replaced | berth CPU | tasks CPU | teardown |\n")
	fmt.Fprintf(&b, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	var totals []time.Duration
	failures := map[string]int{}
	for i, r := range res.converge {
		totals = append(totals, r.Total)
		for k, n := range r.Failed {
			failures[k] += n
		}
		fmt.Fprintf(&b, "| %d | %s ms | %s s | %s s | %s s | **%s s** | %s s | %s s | %s s | %d | %s s | %s s | %s s |\n",
			i+1, ms(r.DeployCall), secs(r.AllCreated), secs(r.AllAssigned), secs(r.AllRunning), secs(r.Total),
			secs(r.LastCreatedAt), secs(r.LastStartedAt), secs(r.LastHealthyAt), r.TasksEver-cfg.replicas,
			secs(r.BerthCPU), secs(r.TaskCPU), secs(r.Teardown))
	}
	if med, err := median(totals); err == nil {
		fmt.Fprintf(&b, "\n**Median time to %d running+healthy: %s s** (runs: %s).\n", cfg.replicas, secs(med), joinSecs(totals))
	}
	if len(failures) > 0 {
		keys := make([]string, 0, len(failures))
		for k := range failures {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		fmt.Fprintf(&b, "\nFailed tasks over all runs, by cause:")
		for _, k := range keys {
			fmt.Fprintf(&b, " %s: %d;", k, failures[k])
		}
		fmt.Fprintf(&b, "\n")
	}
	if last := res.converge[len(res.converge)-1]; last.SteadyCPU > 0 || last.PollCPU > 0 {
		fmt.Fprintf(&b, "\nOnce converged (last run, %s each): `berth up` uses %.0f%% of one core with nothing polling "+
			"(the agent health-checks %d tasks every %s), and %.0f%% while the task list is polled every %s.\n",
			cfg.overhead, 100*last.SteadyCPU, cfg.replicas, cfg.healthInterval, 100*last.PollCPU, cfg.convergePoll)
	}
	fmt.Fprintf(&b, "\n")

	// b.
	fmt.Fprintf(&b, "## b. Start latency: 1 replica, no health check, %d runs\n\n", len(res.start))
	fmt.Fprintf(&b, "Time from the deploy API call (Berth) or from `exec.Cmd.Start` (bare) until each event. The API is polled every %s; "+
		"the task's port is probed with a TCP connect every %s from the moment the API shows the allocated port. "+
		"Percentiles are nearest-rank: with 50 runs p99 is the slowest run.\n\n", cfg.startPoll, cfg.probeEvery)
	fmt.Fprintf(&b, "| event | min | p50 | p99 | max |\n|---|--:|--:|--:|--:|\n")
	col := func(f func(startRun) time.Duration) []time.Duration {
		out := make([]time.Duration, len(res.start))
		for i, r := range res.start {
			out[i] = f(r)
		}
		return out
	}
	rows := []struct {
		name string
		ds   []time.Duration
	}{
		{"task created (orchestrator stamp)", col(func(r startRun) time.Duration { return r.Created })},
		{"task started (agent stamp, driver returned)", col(func(r startRun) time.Duration { return r.AgentRunning })},
		{"API reports running with pid", col(func(r startRun) time.Duration { return r.APIRunning })},
		{"**Berth: TCP connect to the task's port**", col(func(r startRun) time.Duration { return r.Connect })},
		{"**bare fork/exec: TCP connect**", res.bare},
		{"teardown (rm → task gone, pid exited)", col(func(r startRun) time.Duration { return r.Teardown })},
	}
	sums := map[string]summary{}
	for _, row := range rows {
		s, err := summarize(row.ds)
		if err != nil {
			continue
		}
		sums[row.name] = s
		fmt.Fprintf(&b, "| %s | %s ms | %s ms | %s ms | %s ms |\n", row.name, ms(s.Min), ms(s.P50), ms(s.P99), ms(s.Max))
	}
	seg := func(name string, f func(startRun) time.Duration) {
		if sm, err := summarize(col(f)); err == nil {
			fmt.Fprintf(&b, "| %s | %s ms | %s ms | %s ms |\n", name, ms(sm.P50), ms(sm.P99), ms(sm.Max))
		}
	}
	fmt.Fprintf(&b, "\nWhere the time goes, per run (differences of the events above):\n\n")
	fmt.Fprintf(&b, "| segment | p50 | p99 | max |\n|---|--:|--:|--:|\n")
	seg("deploy call → task created (API write, orchestrator)", func(r startRun) time.Duration { return r.Created })
	seg("task created → started (scheduler, assignment stream, agent, driver)", func(r startRun) time.Duration { return r.AgentRunning - r.Created })
	seg("started → API shows running (status report, store write, poll)", func(r startRun) time.Duration { return r.APIRunning - r.AgentRunning })
	seg("started → port accepts (the program's own start-up)", func(r startRun) time.Duration { return r.Connect - r.AgentRunning })
	berth, bare := sums[rows[3].name], sums[rows[4].name]
	api := sums[rows[2].name]
	fmt.Fprintf(&b, "\n**Ratio Berth / bare fork/exec (TCP connect): p50 %s×, p99 %s×.** "+
		"API-reported running / bare: p50 %s×, p99 %s×.\n\n",
		ratio(berth.P50, bare.P50), ratio(berth.P99, bare.P99), ratio(api.P50, bare.P50), ratio(api.P99, bare.P99))

	// c.
	fmt.Fprintf(&b, "## c. Idle memory\n\n")
	fmt.Fprintf(&b, "VmRSS from /proc/PID/status, sampled every second.\n\n")
	fmt.Fprintf(&b, "| process | samples | max | last | last: anon / file |\n|---|--:|--:|--:|--:|\n")
	fmt.Fprintf(&b, "| **`berth up`** (manager + embedded etcd + agent), %s running; %s after it was healthy, over %s | %d | **%s** | **%s** | %s / %s |\n",
		cfg.example, cfg.settle, secsRound(res.rss.Window), len(res.rss.Samples), mib(res.rss.MaxKB), mib(res.rss.LastKB), mib(res.rss.LastAnonKB), mib(res.rss.LastFileKB))
	if n := len(res.rss.WhoamiKB); n > 0 {
		fmt.Fprintf(&b, "| one whoami replica (`berth whoami`; all %d: %s) | 1 | %s | %s | %s anon |\n",
			n, joinMiB(res.rss.WhoamiKB), mib(slices.Max(res.rss.WhoamiKB)), mib(res.rss.WhoamiKB[0]), mib(res.rss.WhoamiAnonKB[0]))
	}
	fmt.Fprintf(&b, "| `berth up` after all the runs above, no service left | %d | %s | %s | %s / %s |\n\n",
		len(res.rssAfter.Samples), mib(res.rssAfter.MaxKB), mib(res.rssAfter.LastKB), mib(res.rssAfter.LastAnonKB), mib(res.rssAfter.LastFileKB))
	if res.rss.Window > 0 {
		fmt.Fprintf(&b, "`berth up` CPU while idle with the example running: %.1f%% of one core (%s s over %s s). "+
			"Total CPU of `berth up` over the whole benchmark: %s s.\n",
			100*res.rss.BerthCPU.Seconds()/res.rss.Window.Seconds(), secs(res.rss.BerthCPU), secs(res.rss.Window), secs(res.berthCPUAll))
	}
	if m := res.mesh; m != nil {
		fmt.Fprintf(&b, "\n## d. Mesh update latency: health change → gateway\n\n")
		fmt.Fprintf(&b, "A 2-replica whoami service behind an HTTP route; each task turns unhealthy %s after it starts "+
			"(100 ms checks, 1 retry, 1 s start period) and is replaced. From the health change as the agent recorded it to the gateway "+
			"acting on it, seen by two keep-alive clients sending requests back to back through the HTTP entrypoint "+
			"(%d requests, %d failed: 503s while neither replica was healthy, as this scenario makes every task fail; "+
			"they say nothing about the gateway).\n\n", cfg.meshLife, m.Requests, m.Failed)
		fmt.Fprintf(&b, "| event | n | p50 | p99 | max |\n|---|--:|--:|--:|--:|\n")
		for _, row := range []struct {
			name string
			ds   []time.Duration
		}{{"healthy → first request routed to it", m.Added}, {"unhealthy → last request routed to it started", m.Removed}} {
			if s, err := summarize(row.ds); err == nil {
				fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", row.name, s.N, ms(s.P50), ms(s.P99), ms(s.Max))
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func mib(kb int64) string {
	return strconv.FormatFloat(float64(kb)/1024, 'f', 1, 64) + " MiB"
}

func joinMiB(kbs []int64) string {
	parts := make([]string, len(kbs))
	for i, kb := range kbs {
		parts[i] = mib(kb)
	}
	return strings.Join(parts, ", ")
}

func joinSecs(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = secs(d)
	}
	return strings.Join(parts, ", ")
}

func secsRound(d time.Duration) string {
	return d.Round(100 * time.Millisecond).String()
}
