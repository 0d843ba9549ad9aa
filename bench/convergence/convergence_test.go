package main

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

func durations(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	ds := durations(50, 10, 40, 20, 30) // unsorted on purpose
	for _, tc := range []struct {
		p    float64
		want int
	}{{1, 10}, {20, 10}, {21, 20}, {50, 30}, {80, 40}, {81, 50}, {99, 50}, {100, 50}} {
		got, err := percentile(ds, tc.p)
		if err != nil {
			t.Fatal(err)
		}
		if got != time.Duration(tc.want)*time.Millisecond {
			t.Errorf("p%g = %s, want %dms", tc.p, got, tc.want)
		}
	}
	if ds[0] != 50*time.Millisecond {
		t.Error("percentile reordered its input")
	}
	// 50 samples 1..50 ms: p99 is the slowest, p50 the 25th.
	var fifty []time.Duration
	for i := 1; i <= 50; i++ {
		fifty = append(fifty, time.Duration(i)*time.Millisecond)
	}
	if got, _ := percentile(fifty, 99); got != 50*time.Millisecond {
		t.Errorf("p99 of 50 = %s, want 50ms", got)
	}
	if got, _ := percentile(fifty, 50); got != 25*time.Millisecond {
		t.Errorf("p50 of 50 = %s, want 25ms", got)
	}
}

func TestPercentileErrors(t *testing.T) {
	if _, err := percentile(nil, 50); !errors.Is(err, errNoSamples) {
		t.Errorf("empty: err = %v, want errNoSamples", err)
	}
	for _, p := range []float64{0, -1, 101} {
		if _, err := percentile(durations(1), p); err == nil {
			t.Errorf("p%g: no error", p)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{durations(3), 3 * time.Millisecond},
		{durations(9, 1, 5), 5 * time.Millisecond},
		{durations(4, 1, 3, 2), 2500 * time.Microsecond},
	} {
		got, err := median(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("median(%v) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	if _, err := median(nil); !errors.Is(err, errNoSamples) {
		t.Errorf("empty: err = %v", err)
	}
}

func TestSummarize(t *testing.T) {
	s, err := summarize(durations(30, 10, 20))
	if err != nil {
		t.Fatal(err)
	}
	want := summary{N: 3, Min: 10 * time.Millisecond, P50: 20 * time.Millisecond, P99: 30 * time.Millisecond, Max: 30 * time.Millisecond}
	if s != want {
		t.Errorf("summarize = %+v, want %+v", s, want)
	}
}

func TestParseStatusKB(t *testing.T) {
	status := []byte("Name:\tberth\nVmPeak:\t 1234 kB\nVmRSS:\t   38912 kB\nRssAnon:\t   20000 kB\nThreads:\t12\n")
	if n, err := parseStatusKB(status, "VmRSS"); err != nil || n != 38912 {
		t.Errorf("VmRSS = %d, %v", n, err)
	}
	if n, err := parseStatusKB(status, "RssAnon"); err != nil || n != 20000 {
		t.Errorf("RssAnon = %d, %v", n, err)
	}
	if _, err := parseStatusKB(status, "VmSwap"); err == nil {
		t.Error("missing key: no error")
	}
	if _, err := parseStatusKB(status, "Threads"); err == nil {
		t.Error("value without kB: no error")
	}
}

func TestParseStatCPU(t *testing.T) {
	// The name holds a space and a ')' to check fields are counted from the
	// last ')'. utime 150, stime 50 ticks → 2s.
	stat := []byte("4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 12 0 100 0 0\n")
	d, err := parseStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if d != 2*time.Second {
		t.Errorf("cpu = %s, want 2s", d)
	}
	if _, err := parseStatCPU([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("short stat: no error")
	}
	if _, err := parseStatCPU([]byte("no paren")); err == nil {
		t.Error("malformed stat: no error")
	}
}

func TestCPUTimeOfSelfGrows(t *testing.T) {
	pid := os.Getpid()
	c0, err := cpuTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for time.Now().Before(deadline) {
		for i := range 1_000_000 {
			x += i
		}
		if c1, err := cpuTime(pid); err == nil && c1 > c0 {
			return
		}
	}
	t.Fatalf("CPU time of this process did not grow after 5s of spinning (%d)", x)
}

func TestProcessAlive(t *testing.T) {
	if !processAlive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	if processAlive(1 << 30) {
		t.Error("an impossible pid is alive")
	}
}

func TestParseCPUModel(t *testing.T) {
	info := []byte("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: other\n")
	if got := parseCPUModel(info); got != "AMD EPYC 7B13" {
		t.Errorf("model = %q", got)
	}
	if got := parseCPUModel([]byte("processor: 0\n")); got != "unknown" {
		t.Errorf("no model = %q", got)
	}
}

func TestFailureKind(t *testing.T) {
	for in, want := range map[string]string{
		"health check failed: GET http://127.0.0.1:25446/healthz: dial tcp 127.0.0.1:25446: connect: connection refused": "health check: connection refused",
		"health check failed: timed out after 250ms: GET http://127.0.0.1:1/healthz: context deadline exceeded":          "health check: timed out",
		"exit code 2": "exit code 2",
		"":            "no error text",
	} {
		if got := failureKind(in); got != want {
			t.Errorf("failureKind(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBenchSpecIsValid(t *testing.T) {
	for _, hi := range []time.Duration{0, 250 * time.Millisecond} {
		spec := benchSpec("conv-1", 100, hi, time.Second)
		spec.Normalize()
		if err := spec.Validate(); err != nil {
			t.Errorf("health interval %s: %v", hi, err)
		}
		if (spec.Task.Health != nil) != (hi > 0) {
			t.Errorf("health interval %s: health check %v", hi, spec.Task.Health)
		}
	}
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.runs != 3 || c.replicas != 100 || c.startRuns != 50 || c.convergePoll != 20*time.Millisecond || c.rssWindow != 10*time.Second {
		t.Errorf("defaults = %+v", c)
	}
	for _, args := range [][]string{{"-runs", "0"}, {"-poll", "0s"}, {"extra"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestRatio(t *testing.T) {
	if got := ratio(3*time.Second, 2*time.Second); got != "1.50" {
		t.Errorf("ratio = %s", got)
	}
	if got := ratio(time.Second, 0); got != "n/a" {
		t.Errorf("ratio by zero = %s", got)
	}
}
