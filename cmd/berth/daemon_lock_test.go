package main

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestUpMessage(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		dataDir, defaultDir, berth string
		services                   []string
		want                       string
	}{
		{"default dir, a service", "/var/lib/berth", "/var/lib/berth", "berth", []string{"hello"}, "\n  berth service ps hello\n"},
		{"default dir, no file", "/var/lib/berth", "/var/lib/berth", "berth", nil, "\n  berth service ls\n"},
		{"go run", "/var/lib/berth", "/var/lib/berth", "go run ./cmd/berth", []string{"web"}, "\n  go run ./cmd/berth service ps web\n"},
		{"another dir is named", "/tmp/b", "/var/lib/berth", "berth", []string{"hello"}, "\n  BERTH_DATA_DIR=/tmp/b berth service ps hello\n"},
		{"a dir that needs quoting", "/tmp/my dir", "/root/.local/share/berth", "berth", nil, "\n  BERTH_DATA_DIR='/tmp/my dir' berth service ls\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := upMessage("https://127.0.0.1:7443", tc.dataDir, tc.defaultDir, tc.berth, tc.services)
			if !strings.Contains(got, tc.want) {
				t.Errorf("upMessage:\n%s\nwant it to contain %q", got, tc.want)
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"/tmp/x": "/tmp/x", "a b": "'a b'", "it's": `'it'\''s'`, "": "''"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

type recorder struct{ strings.Builder }

func (r *recorder) WriteString(s string) (int, error) { return r.Builder.WriteString(s) }

// TestStopOnSignals: the first signal cancels the command (a graceful
// stop); a second one, or a stop that takes longer than its bound, ends the
// process at once. A Berth process always stops on SIGINT or SIGTERM.
func TestStopOnSignals(t *testing.T) {
	run := func(t *testing.T, grace time.Duration, second bool) (int, string) {
		sigs := make(chan os.Signal, 2)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		exited := make(chan int, 1)
		var out recorder
		go stopOnSignals(sigs, cancel, grace, &out, func(code int) { exited <- code })
		sigs <- syscall.SIGINT
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the first signal did not cancel the context")
		}
		if second {
			sigs <- syscall.SIGTERM
		}
		select {
		case code := <-exited:
			return code, out.String()
		case <-time.After(10 * time.Second):
			t.Fatal("no exit")
			return 0, ""
		}
	}
	if code, msg := run(t, time.Hour, true); code != 130 || !strings.Contains(msg, "again") {
		t.Errorf("second signal: exit %d, %q; want 130", code, msg)
	}
	if code, msg := run(t, 50*time.Millisecond, false); code != 1 || !strings.Contains(msg, "still stopping") {
		t.Errorf("graceful stop past its bound: exit %d, %q; want 1", code, msg)
	}
}
