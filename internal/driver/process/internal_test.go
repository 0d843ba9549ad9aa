package process

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/topology"
)

func TestRotate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	lf := logFile{path: filepath.Join(dir, "t.log"), max: 100}
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return string(b)
	}
	write := func(s string) {
		f, err := os.OpenFile(lf.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _, err := rotate(lf); ok || err != nil {
		t.Fatalf("rotate of a missing log = %v, %v", ok, err)
	}
	write(strings.Repeat("a", 50))
	if ok, _, err := rotate(lf); ok || err != nil {
		t.Fatalf("rotate at half the cap = %v, %v; want no rotation", ok, err)
	}
	write("b")
	if ok, _, err := rotate(lf); !ok || err != nil {
		t.Fatalf("rotate over half the cap = %v, %v", ok, err)
	}
	if got, old := read(lf.path), read(lf.old()); got != "" || old != strings.Repeat("a", 50)+"b" {
		t.Fatalf("after rotate: log %q, .1 %q", got, old)
	}
	// Far over the cap: only the newest half is kept.
	write(strings.Repeat("c", 300) + strings.Repeat("d", 50))
	if ok, _, err := rotate(lf); !ok || err != nil {
		t.Fatalf("rotate = %v, %v", ok, err)
	}
	if got, old := read(lf.path), read(lf.old()); got != "" || old != strings.Repeat("d", 50) {
		t.Fatalf("after overshoot: log %q, .1 %q", got, old)
	}
	if _, err := os.Stat(lf.old() + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp file left: %v", err)
	}
}

func TestCredential(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Skip("no /etc/passwd")
	}
	for _, tc := range []struct {
		in       string
		uid, gid uint32
		wantErr  bool
	}{
		{in: "root", uid: 0, gid: 0},
		{in: "0", uid: 0, gid: 0},
		{in: "0:0", uid: 0, gid: 0},
		{in: "root:root", uid: 0, gid: 0},
		{in: "nobody", uid: 65534, gid: 65534},
		{in: "65534:nogroup", uid: 65534, gid: 65534},
		{in: "48213:48214", uid: 48213, gid: 48214},
		{in: "48213", wantErr: true},
		{in: "no-such-user-berth", wantErr: true},
		{in: "root:no-such-group-berth", wantErr: true},
		{in: ":0", wantErr: true},
		{in: "0:", wantErr: true},
	} {
		got, err := credential(tc.in)
		if tc.wantErr {
			if !errors.Is(err, errUser) {
				t.Errorf("credential(%q) err = %v, want errUser", tc.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("credential(%q): %v", tc.in, err)
			continue
		}
		if got.Uid != tc.uid || got.Gid != tc.gid || slices.Contains(got.Groups, tc.gid) || got.Groups == nil {
			t.Errorf("credential(%q) = %+v, want uid %d gid %d, groups without the primary", tc.in, got, tc.uid, tc.gid)
		}
	}
	if c, err := credential(""); c != nil || err != nil {
		t.Errorf("credential(\"\") = %v, %v; want nil (the agent's user)", c, err)
	}
}

// TestTaskLimits: the shared pool of a node that reserves nothing (every
// CPU the agent may use) is no limit; anything narrower, and any CPU,
// memory or memory-node limit, is.
func TestTaskLimits(t *testing.T) {
	t.Parallel()
	all := topology.MustParse("0-3")
	for _, tc := range []struct {
		name    string
		spec    driver.StartSpec
		allowed topology.CPUSet
		want    bool
	}{
		{name: "nothing", want: false},
		{name: "whole machine", spec: driver.StartSpec{CPUSet: "0-3"}, want: false},
		{name: "whole machine, other spelling", spec: driver.StartSpec{CPUSet: "3,0-2"}, want: false},
		{name: "more than the agent may use", spec: driver.StartSpec{CPUSet: "0-7"}, want: false},
		{name: "narrower set", spec: driver.StartSpec{CPUSet: "0-2"}, want: true},
		{name: "one CPU", spec: driver.StartSpec{CPUSet: "1"}, want: true},
		{name: "pinned with memory nodes", spec: driver.StartSpec{CPUSet: "0-3", MemNodes: "0"}, want: true},
		{name: "cpus", spec: driver.StartSpec{CPUSet: "0-3", CPUs: 0.5}, want: true},
		{name: "memory", spec: driver.StartSpec{MemoryBytes: 64 << 20}, want: true},
		{name: "unparsable set", spec: driver.StartSpec{CPUSet: "x"}, want: true},
		{name: "agent CPUs unknown", spec: driver.StartSpec{CPUSet: "0-3"}, allowed: topology.CPUSet{}, want: true},
	} {
		allowed := all
		if tc.name == "agent CPUs unknown" {
			allowed = tc.allowed
		}
		if _, got := taskLimits(tc.spec, allowed); got != tc.want {
			t.Errorf("%s: limited = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := agentCPUs(); got.IsEmpty() {
		t.Error("agentCPUs() is empty")
	}
}
