package logstamp

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHistoryMatchesFilterOfFiles checks the streaming read against the
// whole-file one it replaces, over random logs, indexes and options,
// including a clock step back, lines without a newline and long lines.
func TestHistoryMatchesFilterOfFiles(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	dir := t.TempDir()
	log := filepath.Join(dir, "t.log")
	for iter := 0; iter < 300; iter++ {
		var paths []string
		for _, p := range []string{log + ".1", log} {
			_ = os.Remove(p)
			_ = os.Remove(IndexPath(p))
			if rng.Intn(5) == 0 {
				continue
			}
			var b bytes.Buffer
			for n := rng.Intn(30); n > 0; n-- {
				switch rng.Intn(6) {
				case 0:
					b.WriteString("\n")
				case 1:
					b.WriteString(strings.Repeat("x", chunk+rng.Intn(3*chunk)) + "\n")
				default:
					fmt.Fprintf(&b, "line %d\n", rng.Intn(1000))
				}
			}
			if rng.Intn(3) == 0 {
				b.WriteString("partial")
			}
			var es []Entry
			tm := int64(100)
			for off := int64(0); off < int64(b.Len()); {
				off += int64(1 + rng.Intn(max(1, b.Len()/4)))
				tm += int64(rng.Intn(10)) - 2 // sometimes back
				es = append(es, Entry{Off: min(off, int64(b.Len())), Time: tm})
			}
			if rng.Intn(2) == 0 && len(es) > 0 {
				es = es[:rng.Intn(len(es))]
			}
			if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := Write(IndexPath(p), es); err != nil {
				t.Fatal(err)
			}
			mt := time.Unix(0, tm+int64(rng.Intn(5)))
			if err := os.Chtimes(p, mt, mt); err != nil {
				t.Fatal(err)
			}
			paths = append(paths, p)
		}
		var since time.Time
		if rng.Intn(2) == 0 {
			since = time.Unix(0, int64(95+rng.Intn(40)))
		}
		tail := rng.Intn(12) - 2
		if tail < -1 {
			tail = -1
		}
		whole := rng.Intn(2) == 0
		lines, found, err := Files(log)
		if err != nil {
			t.Fatal(err)
		}
		if whole && len(paths) > 0 && paths[len(paths)-1] == log {
			// Drop the current file's unended line, as the process driver did.
			b, _ := os.ReadFile(log)
			if len(b) > 0 && b[len(b)-1] != '\n' {
				lines = lines[:len(lines)-1]
			}
		}
		want := Format(Filter(lines, since, tail), true)
		h, hfound, err := OpenHistory([]string{log + ".1", log}, HistoryOptions{Since: since, Tail: tail, Stamp: true, WholeOnly: whole})
		if err != nil {
			t.Fatal(err)
		}
		if hfound != found {
			t.Fatalf("iter %d: found %v, want %v", iter, hfound, found)
		}
		got, err := io.ReadAll(h.Reader())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("iter %d (since %v tail %d whole %v): got %d bytes %.200q, want %d bytes %.200q", iter, since, tail, whole, len(got), got, len(want), want)
		}
	}
}
