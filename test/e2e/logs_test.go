package e2e

import (
	"bufio"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// stampedLogLine is a line of `service logs --timestamps`.
var stampedLogLine = regexp.MustCompile(`^(\S+) ([a-z][-a-z0-9]*)\.([0-9]+)\.([a-z0-9]+) \| tick ([0-9]+)$`)

// TestServiceLogsMergedInTimeOrder runs two tasks that print in turn, each in
// its own whole seconds (slot 1 odd, slot 2 even), and checks `service logs`
// prints their lines merged in time order with their times, and that --since
// drops the lines before it.
func TestServiceLogsMergedInTimeOrder(t *testing.T) {
	t.Parallel()
	spec := writeSpec(t, "ticker", `name: ticker
replicas: 2
task:
  driver: process
  command: [/bin/sh, -c, "last=-1; n=0; while [ $n -lt 12 ]; do k=$(( $(date +%s) )); if [ $((k % 2)) -eq $((BERTH_SLOT % 2)) ] && [ $k -ne $last ]; then echo tick $k; last=$k; n=$((n+1)); fi; sleep 0.1; done; exec sleep 3600"]
`)
	b := startBerth(t, spec)
	type line struct {
		at   time.Time
		slot int
		tick int
	}
	parse := func(out string) []line {
		t.Helper()
		var ls []line
		for _, s := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			if s == "" {
				continue
			}
			m := stampedLogLine.FindStringSubmatch(s)
			if m == nil {
				t.Fatalf("log line %q is not \"<time> ticker.<slot>.<id> | tick N\":\n%s", s, out)
			}
			at, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				t.Fatalf("log line %q: time: %v", s, err)
			}
			slot, _ := strconv.Atoi(m[3])
			tick, _ := strconv.Atoi(m[5])
			ls = append(ls, line{at, slot, tick})
		}
		return ls
	}
	var lines []line
	var out string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out = b.mustCLI("service", "logs", "ticker", "--timestamps")
		// Until a task has started, its agent has no log of it and the
		// merged output carries a "(logs unavailable: …)" line for it.
		if strings.Contains(out, "(logs unavailable: ") && time.Now().Before(deadline) {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		if lines = parse(out); len(lines) >= 12 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("12 lines did not come in time:\n%s", out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	switches := 0
	for i, l := range lines {
		if l.tick%2 != l.slot%2 {
			t.Errorf("line %d: slot %d printed tick %d", i, l.slot, l.tick)
		}
		if i == 0 {
			continue
		}
		p := lines[i-1]
		if l.at.Before(p.at) || l.tick <= p.tick {
			t.Errorf("line %d (slot %d tick %d at %v) printed after slot %d tick %d at %v: not in time order:\n%s",
				i, l.slot, l.tick, l.at, p.slot, p.tick, p.at, out)
		}
		if l.slot != p.slot {
			switches++
		}
		// A tick is printed early in its second; its time says so.
		if sec := time.Unix(int64(l.tick), 0); l.at.Before(sec) || l.at.After(sec.Add(5*time.Second)) {
			t.Errorf("line %d: tick %d stamped %v", i, l.tick, l.at)
		}
	}
	if switches < len(lines)/2 {
		t.Errorf("the tasks' lines are not interleaved (%d switches):\n%s", switches, out)
	}

	// --since drops the older lines, across both tasks.
	cut := lines[5]
	out = b.mustCLI("service", "logs", "ticker", "-t", "--since", cut.at.Format(time.RFC3339Nano))
	got := parse(out)
	if len(got) == 0 || got[0].tick != cut.tick {
		t.Fatalf("--since %v: first line is not tick %d:\n%s", cut.at, cut.tick, out)
	}
	for _, l := range got {
		if l.at.Before(cut.at) {
			t.Errorf("--since %v printed a line of %v", cut.at, l.at)
		}
	}
	// A duration back from now keeps the recent lines and drops the rest.
	if all := parse(b.mustCLI("service", "logs", "ticker", "-t", "--since", "1h")); len(all) < len(lines) {
		t.Errorf("--since 1h printed %d lines, want at least %d", len(all), len(lines))
	}
	// --tail counts each task's lines after --since.
	if got := parse(b.mustCLI("service", "logs", "ticker", "-t", "--since", cut.at.Format(time.RFC3339Nano), "--tail", "1")); len(got) != 2 || got[0].at.After(got[1].at) {
		t.Errorf("--tail 1 --since: %v, want one line per task in time order", got)
	}
	// Without --timestamps the lines are as before, in the same order.
	plain := b.mustCLI("service", "logs", "ticker", "--tail", "3")
	for _, s := range strings.Split(strings.TrimRight(plain, "\n"), "\n") {
		if !logLine.MatchString(s) {
			t.Errorf("plain log line %q", s)
		}
	}
	// Following: the history from --since, then new lines as they come, in
	// time order across the tasks.
	last := lines[len(lines)-1].tick
	follow := exec.Command(berthBin, "--data-dir", b.dataDir, "service", "logs", "ticker", "-f", "-t", "--since", cut.at.Format(time.RFC3339Nano))
	follow.Env = cleanEnv()
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	followed := make(chan string, 1)
	go func() {
		// Raw lines only: parsing (and failing) is for the test's goroutine.
		var got strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			got.WriteString(sc.Text() + "\n")
			if m := stampedLogLine.FindStringSubmatch(sc.Text()); m != nil {
				if tick, _ := strconv.Atoi(m[5]); tick >= last+4 {
					break
				}
			}
		}
		followed <- got.String()
	}()
	var raw string
	select {
	case raw = <-followed:
	case <-time.After(time.Minute):
	}
	_ = follow.Process.Kill() // the CLI this test started, by its own handle
	_ = follow.Wait()
	fl := parse(raw)
	if len(fl) == 0 || fl[0].tick != cut.tick || fl[len(fl)-1].tick < last+4 {
		t.Fatalf("followed %v: want from tick %d to past tick %d", fl, cut.tick, last+4)
	}
	for i := 1; i < len(fl); i++ {
		if fl[i].tick <= fl[i-1].tick {
			t.Errorf("followed tick %d after tick %d: not in time order: %v", fl[i].tick, fl[i-1].tick, fl)
		}
	}
	if res := b.cli(nil, "service", "logs", "ticker", "--since", "last tuesday"); res.code == 0 || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 || !strings.Contains(res.stderr, "--since") {
		t.Errorf("bad --since: %v", res)
	}
}
