package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/agent/agenttest"
	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/driver/process"
	"github.com/berth-project/berth/internal/logstamp"
)

// TestTaskLogLinesGetTheirTimes runs a real process task that prints a line
// every 300ms and checks the agent stamps them in increasing order, within
// the time the test saw pass, and that since and tail cut on those times.
func TestTaskLogLinesGetTheirTimes(t *testing.T) {
	d, err := process.New(process.Config{NoCgroups: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	h.cfg.Drivers = map[string]driver.Driver{api.DriverProcess: d}
	h.start()
	task := newTask("timed-task-1")
	task.Spec.Command = []string{"/bin/sh", "-c", "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.3; done; exec sleep 600"}
	task.Spec.StopGracePeriod = api.Duration(time.Second)
	begin := time.Now()
	h.m.Assign(task)
	t.Cleanup(func() {
		h.m.Assign(shutdown(task))
		h.waitStatus(task.ID, api.TaskShutdown)
	})
	eventually(t, func() bool { return len(h.m.Registrations()) > 0 }, "registered")
	reg := h.m.Registrations()[0]
	client := pinnedClient(reg.AgentCertSHA256)
	t.Cleanup(client.CloseIdleConnections)
	get := func(q url.Values) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, reg.AgentURL+"/v1/tasks/"+task.ID+"/logs?"+q.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+reg.AgentSecret)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	type line struct {
		t    time.Time
		text string
	}
	parse := func(body string) []line {
		t.Helper()
		var out []line
		for _, l := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
			if l == "" {
				continue
			}
			at, text, ok := logstamp.Split([]byte(l))
			if !ok {
				t.Fatalf("line without a time: %q", l)
			}
			out = append(out, line{at, string(text)})
		}
		return out
	}
	var lines []line
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := get(url.Values{"timestamps": {"1"}})
		if code == http.StatusOK {
			lines = parse(body)
			if len(lines) == 6 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 6 stamped lines in time: %d %q", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	end := time.Now()
	for i, l := range lines {
		if want := "line " + string(rune('1'+i)); l.text != want {
			t.Fatalf("line %d = %q, want %q", i, l.text, want)
		}
		if l.t.Before(begin) || l.t.After(end) {
			t.Errorf("line %d stamped %v, outside [%v, %v]", i, l.t, begin, end)
		}
		if i > 0 && l.t.Before(lines[i-1].t) {
			t.Errorf("line %d stamped %v, before line %d at %v", i, l.t, i-1, lines[i-1].t)
		}
	}
	// The lines were written 300ms apart: a sample every 100ms tells them
	// apart (a badly delayed sample may join two), and they span at least
	// the 1.5s the task took less one sample's delay.
	distinct := map[time.Time]bool{}
	for _, l := range lines {
		distinct[l.t] = true
	}
	if len(distinct) < 4 || lines[5].t.Sub(lines[0].t) < 900*time.Millisecond {
		t.Errorf("lines written 300ms apart got %d distinct times spanning %v: %v", len(distinct), lines[5].t.Sub(lines[0].t), lines)
	}

	// Cut at line 4, or the nearest later line with a time of its own.
	k := 3
	for k < 5 && lines[k].t.Equal(lines[k-1].t) {
		k++
	}
	since := lines[k].t.Format(time.RFC3339Nano)
	code, body := get(url.Values{"timestamps": {"1"}, "since": {since}})
	if got := parse(body); code != 200 || len(got) != 6-k || got[0].text != lines[k].text {
		t.Errorf("since %s: %d %q", lines[k].text, code, body)
	}
	code, body = get(url.Values{"since": {since}, "tail": {"1"}})
	if code != 200 || body != "line 6\n" {
		t.Errorf("since %s, tail 1, no stamps: %d %q", lines[k].text, code, body)
	}
	code, body = get(url.Values{"since": {"yesterday"}})
	if code != http.StatusBadRequest || !strings.Contains(body, "since") {
		t.Errorf("bad since: %d %q", code, body)
	}
	code, body = get(url.Values{"timestamps": {"maybe"}})
	if code != http.StatusBadRequest || !strings.Contains(body, "timestamps") {
		t.Errorf("bad timestamps: %d %q", code, body)
	}
	// Following: the same cut, then the stream stays open.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, reg.AgentURL+"/v1/tasks/"+task.ID+"/logs?follow=1&timestamps=1&since="+url.QueryEscape(since), nil)
	req.Header.Set("Authorization", "Bearer "+reg.AgentSecret)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for i := k + 1; i <= 6; i++ {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("following: %v", err)
		}
		at, text, ok := logstamp.Split([]byte(strings.TrimSuffix(l, "\n")))
		if !ok || string(text) != fmt.Sprintf("line %d", i) || !at.Equal(lines[i-1].t) {
			t.Errorf("followed %q, want line %d at %v", l, i, lines[i-1].t)
		}
	}
	cancel()
	resp.Body.Close()
	// Without the new parameters the answer is as before.
	if code, body := get(url.Values{"tail": {"1"}}); code != 200 || body != "line 6\n" {
		t.Errorf("plain tail 1: %d %q", code, body)
	}
}

// TestTimedLogsOfEndedTaskAfterRestart: the files of a task the driver forgot
// are served with the times of their index, and the file's modification
// time where there is none (a log written before Berth kept times).
func TestTimedLogsOfEndedTaskAfterRestart(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.m.Assign(newTask("ended-timed"))
	h.waitStatus("ended-timed", api.TaskRunning)
	h.d.Task("ended-timed").Exit(driver.Exit{Code: 0})
	h.waitStatus("ended-timed", api.TaskComplete)
	eventually(t, func() bool { return h.a.taskEnded("ended-timed") }, "ended")
	h.stop()
	dir := filepath.Join(h.dir, "agent", "logs")
	old := filepath.Join(dir, "ended-timed.log.1")
	cur := filepath.Join(dir, "ended-timed.log")
	mt := time.Date(2026, 12, 1, 0, 0, 9, 0, time.UTC)
	if err := os.WriteFile(old, []byte("one\ntwo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(old, mt, mt); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cur, []byte("three\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 0, 0, 10, 0, time.UTC)
	if err := logstamp.Write(logstamp.IndexPath(cur), []logstamp.Entry{{Off: 6, Time: at.UnixNano()}}); err != nil {
		t.Fatal(err)
	}
	h.m = &agenttest.Manager{}
	h.d = &agenttest.LogDriver{}
	h.cfg.Drivers = map[string]driver.Driver{"process": h.d}
	h.start()
	eventually(t, func() bool { return len(h.m.Registrations()) == 1 }, "registered")
	reg := h.m.Registrations()[0]
	client := pinnedClient(reg.AgentCertSHA256)
	defer client.CloseIdleConnections()
	get := func(q string) string {
		req, _ := http.NewRequest(http.MethodGet, reg.AgentURL+"/v1/tasks/ended-timed/logs?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+reg.AgentSecret)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	want := "2026-12-01T00:00:09.000000000Z one\n2026-12-01T00:00:09.000000000Z two\n2026-12-01T00:00:10.000000000Z three\n"
	if got := get("timestamps=1"); got != want {
		t.Errorf("stamped:\n%s\nwant:\n%s", got, want)
	}
	if got := get("since=2026-12-01T00:00:09.5Z"); got != "three\n" {
		t.Errorf("since: %q", got)
	}
}
