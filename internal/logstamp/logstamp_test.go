package logstamp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func texts(ls []Line) string {
	var b []string
	for _, l := range ls {
		b = append(b, string(l.Text))
	}
	return strings.Join(b, ",")
}

func TestStampGivesEachLineTheFirstSampleThatSawItWhole(t *testing.T) {
	data := []byte("a\nbb\nccc\nd")
	// offsets: "a\n" ends at 2, "bb\n" at 5, "ccc\n" at 9, "d" at 10
	es := []Entry{{Off: 2, Time: 100}, {Off: 7, Time: 200}, {Off: 9, Time: 300}}
	fb := time.Unix(0, 999)
	got := Stamp(data, 0, es, fb)
	want := []int64{100, 200, 300, 999}
	if len(got) != 4 || texts(got) != "a,bb,ccc,d" {
		t.Fatalf("lines = %q", texts(got))
	}
	for i, l := range got {
		if l.Time.UnixNano() != want[i] {
			t.Errorf("line %d time = %d, want %d", i, l.Time.UnixNano(), want[i])
		}
	}
	// The same bytes read from offset 5 on.
	got = Stamp([]byte("ccc\nd"), 5, es, fb)
	if texts(got) != "ccc,d" || got[0].Time.UnixNano() != 300 || got[1].Time.UnixNano() != 999 {
		t.Fatalf("from offset 5: %q %v", texts(got), got)
	}
}

func TestFilterCutsSinceThenTail(t *testing.T) {
	var ls []Line
	for i := range 10 {
		ls = append(ls, Line{Time: time.Unix(int64(i), 0), Text: []byte{byte('0' + i)}})
	}
	if got := texts(Filter(ls, time.Unix(6, 0), -1)); got != "6,7,8,9" {
		t.Errorf("since 6 = %q", got)
	}
	if got := texts(Filter(ls, time.Unix(6, 0), 2)); got != "8,9" {
		t.Errorf("since 6 tail 2 = %q", got)
	}
	if got := texts(Filter(ls, time.Time{}, 3)); got != "7,8,9" {
		t.Errorf("tail 3 = %q", got)
	}
	if got := texts(Filter(ls, time.Unix(60, 0), -1)); got != "" {
		t.Errorf("since after all = %q", got)
	}
}

func TestFormatAndSplitRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 8, 1, 2, 3, 4000, time.UTC)
	b := AppendLine(nil, Line{Time: at, Text: []byte("hello world")}, true)
	if string(b) != "2026-12-08T01:02:03.000004000Z hello world\n" {
		t.Fatalf("formatted %q", b)
	}
	got, text, ok := Split(b[:len(b)-1])
	if !ok || !got.Equal(at) || string(text) != "hello world" {
		t.Fatalf("split = %v %q %v", got, text, ok)
	}
	if _, _, ok := Split([]byte("no time here at all")); ok {
		t.Fatal("a line without a time parsed")
	}
	if string(AppendLine(nil, Line{Time: at, Text: []byte("x")}, false)) != "x\n" {
		t.Fatal("unstamped line changed")
	}
}

func TestSamplerRecordsGrowthAndFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "t.log")
	appendTo := func(s string) {
		f, err := os.OpenFile(log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	s := NewSampler(log)
	defer s.Close()
	if err := s.Sample(time.Unix(1, 0)); err != nil { // no file yet
		t.Fatal(err)
	}
	appendTo("one\n")
	must(t, s.Sample(time.Unix(2, 0)))
	must(t, s.Sample(time.Unix(3, 0))) // unchanged: no record
	appendTo("two\nthree\n")
	must(t, s.Sample(time.Unix(4, 0)))
	es, err := Load(IndexPath(log))
	must(t, err)
	if len(es) != 2 || es[0] != (Entry{4, 2e9}) || es[1] != (Entry{14, 4e9}) {
		t.Fatalf("index = %v", es)
	}
	// A restarted agent resumes after the last record.
	s2 := NewSampler(log)
	must(t, s2.Sample(time.Unix(5, 0)))
	s2.Close()
	if es, _ := Load(IndexPath(log)); len(es) != 2 {
		t.Fatalf("resumed sampler added a record for old bytes: %v", es)
	}
	// Rotation keeping only the bytes from 4 on ("two\nthree\n").
	b, _ := os.ReadFile(log)
	must(t, os.WriteFile(log+".1", b[4:], 0o640))
	must(t, os.Truncate(log, 0))
	must(t, s.Rotated(IndexPath(log+".1"), 4))
	appendTo("four\n")
	must(t, s.Sample(time.Unix(6, 0)))
	lines, found, err := Files(log)
	must(t, err)
	if !found || texts(lines) != "two,three,four" {
		t.Fatalf("lines = %q", texts(lines))
	}
	for i, want := range []int64{4, 4, 6} {
		if lines[i].Time.Unix() != want {
			t.Errorf("line %d at %v, want %d", i, lines[i].Time.Unix(), want)
		}
	}
}

func TestFilesWithoutIndexUseModTime(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "old.log")
	must(t, os.WriteFile(log, []byte("a\nb\n"), 0o640))
	mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	must(t, os.Chtimes(log, mt, mt))
	lines, found, err := Files(log)
	must(t, err)
	if !found || len(lines) != 2 || !lines[0].Time.Equal(mt) || !lines[1].Time.Equal(mt) {
		t.Fatalf("lines = %v", lines)
	}
	if _, found, _ := Files(filepath.Join(dir, "none.log")); found {
		t.Fatal("found logs that do not exist")
	}
}

func TestSamplerThinsABigIndex(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "t.log")
	s := NewSampler(log)
	s.MaxRecords = 8
	defer s.Close()
	f, err := os.Create(log)
	must(t, err)
	defer f.Close()
	for i := range 20 {
		_, _ = f.WriteString("x\n")
		must(t, s.Sample(time.Unix(int64(i), 0)))
	}
	es, err := Load(IndexPath(log))
	must(t, err)
	if len(es) > 8 || es[len(es)-1].Off != 40 {
		t.Fatalf("index not bounded or lost its last record: %v", es)
	}
	for i := 1; i < len(es); i++ {
		if es[i].Off <= es[i-1].Off || es[i].Time < es[i-1].Time {
			t.Fatalf("index out of order: %v", es)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSample is the cost of one sample of a task's log that grew: a
// stat and a 16-byte append. Every task pays it at most 10 times a second.
func BenchmarkSample(b *testing.B) {
	log := filepath.Join(b.TempDir(), "t.log")
	f, err := os.Create(log)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s := NewSampler(log)
	s.MaxRecords = 0
	defer s.Close()
	now := time.Now()
	for b.Loop() {
		_, _ = f.Write([]byte("x\n"))
		if err := s.Sample(now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSampleIdle is a sample that finds the log unchanged: a stat.
func BenchmarkSampleIdle(b *testing.B) {
	log := filepath.Join(b.TempDir(), "t.log")
	if err := os.WriteFile(log, []byte("x\n"), 0o640); err != nil {
		b.Fatal(err)
	}
	s := NewSampler(log)
	defer s.Close()
	now := time.Now()
	for b.Loop() {
		if err := s.Sample(now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStampAndFormat is the cost per line of serving a stamped log.
func BenchmarkStampAndFormat(b *testing.B) {
	var data []byte
	var es []Entry
	for i := range 1000 {
		data = append(data, "a log line of a typical length, about sixty bytes long\n"...)
		if i%10 == 9 {
			es = append(es, Entry{Off: int64(len(data)), Time: int64(i)})
		}
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		_ = Format(Stamp(data, 0, es, time.Now()), true)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/line")
}

func TestReaderRendersAsFormat(t *testing.T) {
	var ls []Line
	for i := range 500 {
		ls = append(ls, Line{Time: time.Unix(int64(i), 0), Text: []byte(strings.Repeat("x", i%37))})
	}
	want := string(Format(ls, true))
	var got []byte
	r := NewReader(append([]Line(nil), ls...), true)
	buf := make([]byte, 100)
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if string(got) != want {
		t.Fatalf("reader gave %d bytes, Format %d", len(got), len(want))
	}
}
