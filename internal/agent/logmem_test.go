package agent

import (
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

// TestTimedLogFilesMemoryDoesNotGrowWithTheLog: the log files of an ended
// task are read without their driver; one timed read of 10 MiB of empty
// lines (the task chooses them) must not cost memory per line.
func TestTimedLogFilesMemoryDoesNotGrowWithTheLog(t *testing.T) {
	dir := t.TempDir()
	const size = 10 << 20
	t0 := time.Unix(1_700_000_000, 0)
	// Half in the rotated file, half in the current one.
	for i, p := range []string{filepath.Join(dir, "t1.log.1"), filepath.Join(dir, "t1.log")} {
		if err := os.WriteFile(p, []byte(strings.Repeat("\n", size/2)), 0o600); err != nil {
			t.Fatal(err)
		}
		var es []logstamp.Entry
		for off := int64(64 << 10); off <= size/2; off += 64 << 10 {
			es = append(es, logstamp.Entry{Off: off, Time: t0.Add(time.Duration(off>>16+int64(i)*80) * time.Second).UnixNano()})
		}
		if err := logstamp.Write(logstamp.IndexPath(p), es); err != nil {
			t.Fatal(err)
		}
	}
	const bound = 4 << 20
	for _, tc := range []struct {
		name   string
		opts   driver.LogOptions
		minOut int64
	}{
		{"tail", driver.LogOptions{Tail: 10, Timestamps: true}, 10},
		{"since the middle", driver.LogOptions{Tail: -1, Since: t0.Add(100 * time.Second), Timestamps: true}, size / 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a, b runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&a)
			rc, err := readTimedLogFiles(dir, "t1", tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			runtime.ReadMemStats(&b)
			if err != nil {
				t.Fatal(err)
			}
			if n < tc.minOut {
				t.Fatalf("read %d bytes, want at least %d", n, tc.minOut)
			}
			got := b.TotalAlloc - a.TotalAlloc
			t.Logf("%s: %d bytes out, %d bytes allocated", tc.name, n, got)
			if got > bound {
				t.Fatalf("one read of a %d-byte log allocated %d bytes, want under %d", size, got, bound)
			}
		})
	}
}
