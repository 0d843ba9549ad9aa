package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 8, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
		err  string
	}{
		{"", time.Time{}, ""},
		{"10m", now.Add(-10 * time.Minute), ""},
		{"1h30m", now.Add(-90 * time.Minute), ""},
		{"2026-12-08T10:00:00Z", time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC), ""},
		{"2026-12-08T11:00:00.5+01:00", time.Date(2026, 12, 8, 10, 0, 0, 5e8, time.UTC), ""},
		{"2026-12-07", time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC), ""},
		{"-5m", time.Time{}, "positive duration"},
		{"0s", time.Time{}, "positive duration"},
		{"yesterday", time.Time{}, "RFC 3339"},
	} {
		got, err := parseSince(c.in, now)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "--since") {
				t.Errorf("parseSince(%q) = %v, %v; want an error about %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || !got.Equal(c.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}
