package process

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/logstamp"
)

// writeNewlineLog writes a log of size bytes of empty lines, the worst case
// a task can write for a reader that keeps a record per line, with an index
// record every 64 KiB one second apart from t0.
func writeNewlineLog(t *testing.T, path string, size int, t0 time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Repeat("\n", size)), 0o600); err != nil {
		t.Fatal(err)
	}
	var es []logstamp.Entry
	for off, i := int64(64<<10), 0; off <= int64(size); off, i = off+64<<10, i+1 {
		es = append(es, logstamp.Entry{Off: off, Time: t0.Add(time.Duration(i) * time.Second).UnixNano()})
	}
	if err := logstamp.Write(logstamp.IndexPath(path), es); err != nil {
		t.Fatal(err)
	}
}

// allocated returns the bytes allocated while f runs.
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// TestTimedLogsMemoryDoesNotGrowWithTheLog: a task controls its log, so one
// timed read of 10 MiB of empty lines must not cost memory in proportion to
// its 10 million lines (it cost GiBs when every line got a record).
func TestTimedLogsMemoryDoesNotGrowWithTheLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.log")
	t0 := time.Unix(1_700_000_000, 0)
	const size = 10 << 20
	writeNewlineLog(t, path, size, t0)
	const bound = 4 << 20
	for _, tc := range []struct {
		name   string
		opts   driver.LogOptions
		minOut int
	}{
		{"tail", driver.LogOptions{Tail: 10, Timestamps: true}, 10},
		{"since the middle", driver.LogOptions{Tail: -1, Since: t0.Add(80 * time.Second), Timestamps: true}, size / 4},
		{"follow tail", driver.LogOptions{Tail: 10, Timestamps: true, Follow: true}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n int64
			got := allocated(func() {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				rc, err := openTimedLogs(ctx, path, &logState{}, tc.opts, 50*time.Millisecond)
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				if tc.opts.Follow {
					// History only: read the lines it must give, then stop.
					buf := make([]byte, 1)
					for lines := 0; lines < tc.minOut; {
						if _, err := io.ReadFull(rc, buf); err != nil {
							t.Fatal(err)
						}
						n++
						if buf[0] == '\n' {
							lines++
						}
					}
					return
				}
				if n, err = io.Copy(io.Discard, rc); err != nil {
					t.Fatal(err)
				}
			})
			if n < int64(tc.minOut) {
				t.Fatalf("read %d bytes, want at least %d", n, tc.minOut)
			}
			t.Logf("%s: %d bytes out, %d bytes allocated", tc.name, n, got)
			if got > bound {
				t.Fatalf("one read of a %d-byte log allocated %d bytes, want under %d", size, got, bound)
			}
		})
	}
}

// TestTimedLogsStreamedAcrossARotation: the history is streamed after the
// lock is let go, so a rotation can truncate the log mid-read; the rest must
// come from .1, where the rotation put the same bytes at the same offsets.
func TestTimedLogsStreamedAcrossARotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.log")
	var want strings.Builder
	for i := 0; i < 40000; i++ {
		fmt.Fprintf(&want, "line %06d\n", i)
	}
	if err := os.WriteFile(path, []byte(want.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	st := &logState{}
	rc, err := openTimedLogs(context.Background(), path, st, driver.LogOptions{Tail: -1}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	head := make([]byte, 100)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	rotated, _, err := rotate(logFile{path: path, max: int64(want.Len())})
	st.gen++
	st.mu.Unlock()
	if err != nil || !rotated {
		t.Fatalf("rotate: %v %v", rotated, err)
	}
	// Something new in the log at the old offsets must not show.
	if err := os.WriteFile(path, []byte(strings.Repeat("new\n", want.Len()/4)), 0o600); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(head) + string(rest); got != want.String() {
		t.Fatalf("read %d bytes across the rotation, want the %d before it", len(got), want.Len())
	}
}
