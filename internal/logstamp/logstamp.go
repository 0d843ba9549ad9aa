// Package logstamp gives times to the lines of a task log that the task
// writes straight to a file (see ADR 0034). Beside <task>.log the driver keeps
// an index, <task>.log.idx: fixed 16-byte records (end offset, Unix nanos),
// appended whenever a sample finds the log grown. A line's time is that of the
// first record at or past its end: the sample that first saw it whole. Lines
// past the last record get the file's modification time, which is when its
// last byte was written, so files without an index (older Berth) still get
// a time.
//
// The package only reads and writes files and formats lines; it must not know
// about drivers, agents or the API.
package logstamp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"
)

// Layout is the time format of a stamped line: RFC 3339 in UTC with
// nanoseconds, fixed width, as docker prints with --timestamps.
const Layout = "2006-01-02T15:04:05.000000000Z07:00"

// RecordSize is the size of one index record.
const RecordSize = 16

// IndexPath is the index kept beside the log at logPath.
func IndexPath(logPath string) string { return logPath + ".idx" }

// Entry says the log was Off bytes long at Time (Unix nanoseconds).
type Entry struct {
	Off  int64
	Time int64
}

// Load reads an index file. A missing file is an empty index; a torn last
// record (a sample being appended) is ignored.
func Load(path string) ([]Entry, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("logstamp: %w", err)
	}
	return Decode(b), nil
}

// Decode parses whole records from b.
func Decode(b []byte) []Entry {
	out := make([]Entry, 0, len(b)/RecordSize)
	for ; len(b) >= RecordSize; b = b[RecordSize:] {
		out = append(out, Entry{
			Off:  int64(binary.LittleEndian.Uint64(b)),
			Time: int64(binary.LittleEndian.Uint64(b[8:])),
		})
	}
	return out
}

// Encode appends e's record to dst.
func Encode(dst []byte, e Entry) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, uint64(e.Off))
	return binary.LittleEndian.AppendUint64(dst, uint64(e.Time))
}

// Write replaces the index at path with entries, atomically.
func Write(path string, entries []Entry) error {
	b := make([]byte, 0, len(entries)*RecordSize)
	for _, e := range entries {
		b = Encode(b, e)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return fmt.Errorf("logstamp: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("logstamp: %w", err)
	}
	return nil
}

// Sampler appends a record to an index each time Sample finds the log grown.
// One goroutine uses it.
type Sampler struct {
	log, idx string
	last     int64
	f        *os.File // the index, for appending
	lf       *os.File // the log, read-only, for fstat (rotation truncates it in place)
	buf      []byte
	// MaxRecords bounds the index: past it, every other record is dropped,
	// halving the resolution of old lines rather than growing without end.
	MaxRecords int64
	n          int64
}

// NewSampler samples the log at logPath into its index. It resumes after the
// index's last record, so a restarted agent does not restamp old bytes.
func NewSampler(logPath string) *Sampler {
	s := &Sampler{log: logPath, idx: IndexPath(logPath), MaxRecords: 1 << 16}
	if es, err := Load(s.idx); err == nil && len(es) > 0 {
		s.last, s.n = es[len(es)-1].Off, int64(len(es))
	}
	return s
}

// Sample records the log's size at now if it changed since the last record.
// A log found shorter was truncated by a rotation the caller did not report
// (Reset is the way to report one); sampling restarts from its new size.
func (s *Sampler) Sample(now time.Time) error {
	if s.lf == nil {
		lf, err := os.Open(s.log)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("logstamp: %w", err)
		}
		s.lf = lf
	}
	fi, err := s.lf.Stat()
	if err != nil {
		return fmt.Errorf("logstamp: %w", err)
	}
	size := fi.Size()
	if size == s.last {
		return nil
	}
	if size < s.last {
		s.last = 0
	}
	s.last = size
	if s.f == nil {
		f, err := os.OpenFile(s.idx, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("logstamp: %w", err)
		}
		s.f = f
	}
	s.buf = Encode(s.buf[:0], Entry{Off: size, Time: now.UnixNano()})
	if _, err := s.f.Write(s.buf); err != nil {
		return fmt.Errorf("logstamp: %w", err)
	}
	s.n++
	if s.MaxRecords > 0 && s.n > s.MaxRecords {
		return s.thin()
	}
	return nil
}

// thin keeps every other record (and always the last).
func (s *Sampler) thin() error {
	es, err := Load(s.idx)
	if err != nil {
		return err
	}
	kept := es[:0]
	for i, e := range es {
		if i%2 == 1 || i == len(es)-1 {
			kept = append(kept, e)
		}
	}
	s.Close()
	s.n = int64(len(kept))
	return Write(s.idx, kept)
}

// Rotated tells the sampler the log was copied to the rotated file (keeping
// only the bytes from skip on) and truncated: the index moves to the rotated
// index with offsets shifted by skip, and a new index starts.
func (s *Sampler) Rotated(rotatedIdx string, skip int64) error {
	s.Close()
	es, err := Load(s.idx)
	if err != nil {
		return err
	}
	kept := es[:0]
	for _, e := range es {
		if e.Off-skip > 0 {
			kept = append(kept, Entry{Off: e.Off - skip, Time: e.Time})
		}
	}
	if err := Write(rotatedIdx, kept); err != nil {
		return err
	}
	s.last, s.n = 0, 0
	if err := os.Remove(s.idx); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("logstamp: %w", err)
	}
	return nil
}

// Close closes the files; the next Sample opens them again.
func (s *Sampler) Close() {
	if s.f != nil {
		_ = s.f.Close()
		s.f = nil
	}
	if s.lf != nil {
		_ = s.lf.Close()
		s.lf = nil
	}
}

// Line is one line of a log with its time.
type Line struct {
	Time time.Time
	Text []byte // without the newline
}

// Stamp splits data, which starts at offset base of a log, into lines and
// gives each a time from entries (sorted by offset): that of the first entry
// at or past the line's end, else fallback. A last line without a newline is
// included.
func Stamp(data []byte, base int64, entries []Entry, fallback time.Time) []Line {
	var out []Line
	off := base
	i := sort.Search(len(entries), func(i int) bool { return entries[i].Off > base })
	for len(data) > 0 {
		n := bytes.IndexByte(data, '\n')
		text := data
		if n >= 0 {
			text, data = data[:n], data[n+1:]
			off += int64(n) + 1
		} else {
			data = nil
			off += int64(len(text))
		}
		for i < len(entries) && entries[i].Off < off {
			i++
		}
		t := fallback
		if i < len(entries) {
			t = time.Unix(0, entries[i].Time)
		}
		out = append(out, Line{Time: t, Text: text})
	}
	return out
}

// Filter keeps the lines at or after since (all when since is zero), then
// the last tail of them (all when tail < 0).
func Filter(lines []Line, since time.Time, tail int) []Line {
	if !since.IsZero() {
		i := 0
		for i < len(lines) && lines[i].Time.Before(since) {
			i++
		}
		// Times of one file never go back, but a clock step could: keep
		// every line at or after since, not just the suffix.
		kept := lines[:0:0]
		for _, l := range lines[i:] {
			if !l.Time.Before(since) {
				kept = append(kept, l)
			}
		}
		lines = kept
	}
	if tail >= 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	return lines
}

// AppendLine appends "<time> <text>\n" (with stamp) or "<text>\n" to dst.
func AppendLine(dst []byte, l Line, stamp bool) []byte {
	if stamp {
		dst = l.Time.UTC().AppendFormat(dst, Layout)
		dst = append(dst, ' ')
	}
	dst = append(dst, l.Text...)
	return append(dst, '\n')
}

// Format renders lines with AppendLine.
func Format(lines []Line, stamp bool) []byte {
	var b []byte
	for _, l := range lines {
		b = AppendLine(b, l, stamp)
	}
	return b
}

// Split parses a stamped line "<time> <text>" as written by AppendLine. ok is
// false when the line does not start with a time.
func Split(line []byte) (t time.Time, text []byte, ok bool) {
	sp := bytes.IndexByte(line, ' ')
	if sp < 20 || sp > 40 {
		return time.Time{}, line, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(line[:sp]))
	if err != nil {
		return time.Time{}, line, false
	}
	return t, line[sp+1:], true
}

// Files reads a log written as <path>.1 (rotated part) then <path>, with their
// indexes, and stamps every line; the modification time of each file stamps
// what its index does not cover. found is false when neither file exists.
// It holds the whole log and a record per line: serving a log, whose size and
// lines the task chooses, goes through OpenHistory instead.
func Files(path string) (lines []Line, found bool, err error) {
	for _, p := range []string{path + ".1", path} {
		b, fi, err := readWithInfo(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		found = true
		es, err := Load(IndexPath(p))
		if err != nil {
			return nil, false, err
		}
		lines = append(lines, Stamp(b, 0, es, fi.ModTime())...)
	}
	return lines, found, nil
}

func readWithInfo(p string) ([]byte, os.FileInfo, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("logstamp: %w", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, fmt.Errorf("logstamp: %w", err)
	}
	return b, fi, nil
}

// NewReader renders lines with AppendLine as they are read, so serving a log
// holds the file once, not a second formatted copy.
func NewReader(lines []Line, stamp bool) io.Reader {
	return &lineReader{lines: lines, stamp: stamp}
}

type lineReader struct {
	lines []Line
	stamp bool
	buf   []byte
	off   int
}

func (r *lineReader) Read(p []byte) (int, error) {
	if r.off == len(r.buf) {
		r.buf, r.off = r.buf[:0], 0
		for len(r.buf) < len(p) && len(r.lines) > 0 {
			r.buf = AppendLine(r.buf, r.lines[0], r.stamp)
			r.lines[0] = Line{} // let the text go
			r.lines = r.lines[1:]
		}
		if len(r.buf) == 0 {
			return 0, io.EOF
		}
	}
	n := copy(p, r.buf[r.off:])
	r.off += n
	return n, nil
}
