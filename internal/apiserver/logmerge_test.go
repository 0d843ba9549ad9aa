package apiserver

import (
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/logstamp"
)

func stamped(base time.Time, lines ...string) string {
	var b []byte
	for i, l := range lines {
		if l == "" {
			continue
		}
		b = logstamp.AppendLine(b, logstamp.Line{Time: base.Add(time.Duration(i) * time.Second), Text: []byte(l)}, true)
	}
	return string(b)
}

func TestMergeSourcesOrdersLinesOfAllTasksByTime(t *testing.T) {
	t0 := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	// Task a writes at 0s, 2s, 4s; task b at 1s, 3s, 5s; c at 2s too.
	a := stamped(t0, "a0", "", "a2", "", "a4")
	b := stamped(t0, "", "b1", "", "b3", "", "b5")
	c := stamped(t0, "", "", "c2") + "no time: an older agent\n"
	srcs := []*lineSource{
		newLineSource(strings.NewReader(a), "a | ", 0),
		newLineSource(strings.NewReader(b), "b | ", 1),
		newLineSource(strings.NewReader(c), "c | ", 2),
		noteSource("d | (logs unavailable: down)", 3),
	}
	var got []string
	mergeSources(srcs, func(l logLine) { got = append(got, l.render(false)) })
	want := []string{
		"d | (logs unavailable: down)",
		"a | a0", "b | b1", "a | a2", "c | c2", "c | no time: an older agent", "b | b3", "a | a4", "b | b5",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("merged:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var stampedOut []string
	mergeSources([]*lineSource{newLineSource(strings.NewReader(a), "a | ", 0)}, func(l logLine) {
		stampedOut = append(stampedOut, l.render(true))
	})
	if stampedOut[0] != "2026-12-08T00:00:00.000000000Z a | a0" {
		t.Fatalf("stamped line = %q", stampedOut[0])
	}
}

func TestReorderLinesSortsWithinTheWindow(t *testing.T) {
	t0 := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	in := make(chan logLine)
	done := make(chan struct{})
	out := make(chan string, 16)
	go func() {
		reorderLines(in, done, 200*time.Millisecond, func(l logLine) { out <- l.text })
		close(out)
	}()
	// Arrive out of time order, within the window.
	in <- logLine{t: t0.Add(3 * time.Second), text: "3", src: 1}
	in <- logLine{t: t0.Add(1 * time.Second), text: "1", src: 0}
	in <- logLine{t: t0.Add(2 * time.Second), text: "2", src: 1}
	var got []string
	deadline := time.After(10 * time.Second)
	for len(got) < 3 {
		select {
		case s := <-out:
			got = append(got, s)
		case <-deadline:
			t.Fatalf("got only %v", got)
		}
	}
	if strings.Join(got, "") != "123" {
		t.Fatalf("order = %v", got)
	}
	close(in)
	if _, ok := <-out; ok {
		t.Fatal("lines after the end")
	}
	close(done)
}

// BenchmarkMerge is the manager's cost per line of merging 10 tasks' logs.
func BenchmarkMerge(b *testing.B) {
	t0 := time.Now()
	var logs []string
	for k := range 10 {
		var sb strings.Builder
		for i := range 1000 {
			sb.Write(logstamp.AppendLine(nil, logstamp.Line{Time: t0.Add(time.Duration(i*10+k) * time.Millisecond), Text: []byte("a log line of a typical length, about sixty bytes long")}, true))
		}
		logs = append(logs, sb.String())
	}
	for b.Loop() {
		srcs := make([]*lineSource, len(logs))
		for i, l := range logs {
			srcs[i] = newLineSource(strings.NewReader(l), "web.1.abcdef012345 | ", i)
		}
		mergeSources(srcs, func(l logLine) { _ = l.render(true) })
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*10000), "ns/line")
}
