package main

import (
	"strings"
	"testing"
	"time"
)

func TestAgo(t *testing.T) {
	t.Parallel()
	now := testNow
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "just now"},
		{-time.Minute, "just now"}, // clock skew: never "-1 minutes"
		{time.Second, "1 second ago"},
		{59 * time.Second, "59 seconds ago"},
		{time.Minute, "1 minute ago"},
		{5*time.Minute + 30*time.Second, "5 minutes ago"},
		{time.Hour, "1 hour ago"},
		{47 * time.Hour, "47 hours ago"},
		{48 * time.Hour, "2 days ago"},
		{400 * 24 * time.Hour, "400 days ago"},
	}
	for _, tt := range tests {
		if got := ago(now, now.Add(-tt.d)); got != tt.want {
			t.Errorf("ago(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
	if got := ago(now, time.Time{}); got != "" {
		t.Errorf("ago(zero) = %q, want empty", got)
	}
}

func TestHumanBytes(t *testing.T) {
	t.Parallel()
	tests := map[int64]string{
		0: "", -1: "", 1: "1B", 1023: "1023B", 1024: "1KiB", 1536: "1.5KiB",
		512 << 20: "512MiB", 3<<30 + 512<<20: "3.5GiB", 16 << 40: "16TiB", 1 << 50: "1PiB", 1 << 60: "1024PiB",
	}
	for n, want := range tests {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestCell(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"":                       "-",
		"  ":                     "-",
		"ok":                     "ok",
		"a\tb\nc\x1b[31mred":     "a b c [31mred",
		strings.Repeat("é", 100): strings.Repeat("é", maxCell-1) + "…",
	}
	for in, want := range tests {
		if got := cell(in); got != want {
			t.Errorf("cell(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFormatPortsAndShortID(t *testing.T) {
	t.Parallel()
	if got := formatPorts(map[string]int{"web": 1, "admin": 2}); got != "admin:2,web:1" {
		t.Errorf("formatPorts = %q", got)
	}
	if got := formatPorts(nil); got != "" {
		t.Errorf("formatPorts(nil) = %q", got)
	}
	if shortID("0123456789abcdef") != "0123456789ab" || shortID("abc") != "abc" {
		t.Error("shortID")
	}
}

func TestWriteJSONListNeverNull(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	if err := writeJSONList[int](&b, nil); err != nil || b.String() != "[]\n" {
		t.Errorf("nil list: %q, %v", b.String(), err)
	}
	b.Reset()
	if err := writeJSONList(&b, []string{"a"}); err != nil || b.String() != "[\n  \"a\"\n]\n" {
		t.Errorf("list: %q, %v", b.String(), err)
	}
}
