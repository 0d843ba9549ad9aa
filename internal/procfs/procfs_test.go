package procfs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	// 52 fields, like a real kernel 6.x line: utime (14) is 11, stime 12,
	// num_threads (20) 17, starttime (22) 777, rss (24) 21.
	tail := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50\n"
	tests := []struct {
		name    string
		line    string
		want    Stat
		wantErr bool
	}{
		{"plain", "42 (sleep) S" + tail, Stat{PID: 42, Comm: "sleep", State: 'S', PPID: 1, PGRP: 2, UTime: 11, STime: 12, NumThreads: 17, StartTime: 777, RSSPages: 21}, false},
		{"spaces", "42 (my prog x) R" + tail, Stat{PID: 42, Comm: "my prog x", State: 'R', PPID: 1, PGRP: 2, UTime: 11, STime: 12, NumThreads: 17, StartTime: 777, RSSPages: 21}, false},
		{"parens", "42 (a) b (c)) Z" + tail, Stat{PID: 42, Comm: "a) b (c)", State: 'Z', PPID: 1, PGRP: 2, UTime: 11, STime: 12, NumThreads: 17, StartTime: 777, RSSPages: 21}, false},
		{"fake fields in comm", "7 () S 9 9 9 9 9) S" + tail, Stat{PID: 7, Comm: ") S 9 9 9 9 9", State: 'S', PPID: 1, PGRP: 2, UTime: 11, STime: 12, NumThreads: 17, StartTime: 777, RSSPages: 21}, false},
		{"empty comm", "7 () X" + tail, Stat{PID: 7, Comm: "", State: 'X', PPID: 1, PGRP: 2, UTime: 11, STime: 12, NumThreads: 17, StartTime: 777, RSSPages: 21}, false},
		{"truncated", "42 (sleep) S 1 2 3\n", Stat{}, true},
		{"no comm", "42 sleep S" + tail, Stat{}, true},
		{"bad pid", "x (sleep) S" + tail, Stat{}, true},
		{"bad start", "42 (sleep) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 -5 20 21\n", Stat{}, true},
		{"no rss", "42 (sleep) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 20\n", Stat{}, true},
		{"empty", "", Stat{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStat([]byte(tc.line))
			if tc.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseStat(%q) err = %v, want ErrMalformed", tc.line, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseStat(%q): %v", tc.line, err)
			}
			if got != tc.want {
				t.Fatalf("ParseStat(%q) = %+v, want %+v", tc.line, got, tc.want)
			}
		})
	}
}

func TestZombie(t *testing.T) {
	t.Parallel()
	for st, want := range map[byte]bool{'Z': true, 'X': true, 'S': false, 'R': false, 'D': false, 'T': false} {
		if got := (Stat{State: st}).Zombie(); got != want {
			t.Errorf("state %c: Zombie = %v, want %v", st, got, want)
		}
	}
}

// TestFakeFS reads from a fake proc directory.
func TestFakeFS(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	write := func(pid int, line string) {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tail := " 1 1 0 -1 4194304 0 0 0 0 0 0 0 0 0 20 0 1 0 5000 100 1 18446744073709551615\n"
	write(10, "10 (x (y)) S"+tail)
	write(11, "11 (z) Z"+tail)
	fs := FS(root)
	if st, err := fs.StartTime(10); err != nil || st != 5000 {
		t.Fatalf("StartTime(10) = %d, %v; want 5000", st, err)
	}
	for _, tc := range []struct {
		pid   int
		start uint64
		want  bool
	}{{10, 5000, true}, {10, 5001, false}, {11, 5000, false}, {12, 5000, false}} {
		got, err := fs.Alive(tc.pid, tc.start)
		if err != nil || got != tc.want {
			t.Errorf("Alive(%d, %d) = %v, %v; want %v", tc.pid, tc.start, got, err, tc.want)
		}
	}
	if _, err := fs.Stat(12); !errors.Is(err, ErrNoProcess) {
		t.Errorf("Stat(12) err = %v, want ErrNoProcess", err)
	}
	write(20, "20 (g) S 1 10 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5000 100 1\n")
	write(21, "21 (g) Z 1 10 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5000 100 1\n")
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := fs.GroupMembers(10); err != nil || len(got) != 1 || got[0] != 20 {
		t.Errorf("GroupMembers(10) = %v, %v; want [20] (21 is a zombie)", got, err)
	}
	if z, err := fs.IsZombie(11); err != nil || !z {
		t.Errorf("IsZombie(11) = %v, %v; want true", z, err)
	}
}

// TestRealProcess checks start time, zombie state and liveness against a real
// child with a comm full of spaces and parentheses.
func TestRealProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// The kernel takes comm from the file name (first 15 bytes).
	name := filepath.Join(dir, "a) (b c")
	if err := os.Symlink("/bin/sleep", name); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start %s: %v", name, err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	s, err := Default.Stat(pid)
	if err != nil {
		t.Fatal(err)
	}
	if s.Comm != "a) (b c" || s.PPID != os.Getpid() || s.StartTime == 0 {
		t.Fatalf("Stat = %+v, want comm %q ppid %d", s, "a) (b c", os.Getpid())
	}
	if ok, err := Alive(pid, s.StartTime); err != nil || !ok {
		t.Fatalf("Alive = %v, %v; want true", ok, err)
	}
	if ok, _ := Alive(pid, s.StartTime+1); ok {
		t.Fatal("Alive with another start time = true")
	}
	// Kill it but do not reap: it must show as a zombie, hence not alive.
	if err := cmd.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		z, err := IsZombie(pid)
		if err != nil {
			t.Fatal(err)
		}
		if z {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("killed child never became a zombie")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if ok, _ := Alive(pid, s.StartTime); ok {
		t.Fatal("Alive(zombie) = true")
	}
	_ = cmd.Wait()
	if ok, err := Alive(pid, s.StartTime); err != nil || ok {
		t.Fatalf("Alive(reaped) = %v, %v; want false, nil", ok, err)
	}
	if _, err := StartTime(pid); !errors.Is(err, ErrNoProcess) {
		t.Fatalf("StartTime(reaped) err = %v, want ErrNoProcess", err)
	}
}
