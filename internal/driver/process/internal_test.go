package process

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
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
	if ok, err := rotate(lf); ok || err != nil {
		t.Fatalf("rotate of a missing log = %v, %v", ok, err)
	}
	write(strings.Repeat("a", 50))
	if ok, err := rotate(lf); ok || err != nil {
		t.Fatalf("rotate at half the cap = %v, %v; want no rotation", ok, err)
	}
	write("b")
	if ok, err := rotate(lf); !ok || err != nil {
		t.Fatalf("rotate over half the cap = %v, %v", ok, err)
	}
	if got, old := read(lf.path), read(lf.old()); got != "" || old != strings.Repeat("a", 50)+"b" {
		t.Fatalf("after rotate: log %q, .1 %q", got, old)
	}
	// Far over the cap: only the newest half is kept.
	write(strings.Repeat("c", 300) + strings.Repeat("d", 50))
	if ok, err := rotate(lf); !ok || err != nil {
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
