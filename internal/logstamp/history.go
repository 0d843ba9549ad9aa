package logstamp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"time"
)

// chunk is the size of every buffer a History reads with: a timed read holds
// a few of them, whatever the size or line count of the log, because the task
// controls what it writes (ADR 0034; see docs/api.md).
const chunk = 32 << 10

// HistoryOptions selects the lines a History writes.
type HistoryOptions struct {
	// Since keeps the lines stamped at or after it (all when zero).
	Since time.Time
	// Tail keeps the last Tail of those lines (all when negative).
	Tail int
	// Stamp starts every line with its time, as AppendLine does.
	Stamp bool
	// WholeOnly leaves out a last line of the last file that has no newline
	// yet, for a follower that passes it on once it is whole.
	WholeOnly bool
	// Last, when set, wraps the reads WriteTo makes of the last file, which
	// its writer may rotate meanwhile (OpenHistory reads it directly). Close
	// closes what it returns if that is an io.Closer.
	Last func(f *os.File) io.ReaderAt
}

// History is a timed read of a log's files, opened and positioned but not
// read yet: WriteTo streams the selected lines, stamping them one by one, so
// it never holds the log, its lines or its output whole.
type History struct {
	segs []segment
	opts HistoryOptions
	// End is where the history stops in the last file (0 when it is
	// missing): a follower goes on from there.
	End int64
}

// segment is one file of the log: the bytes [start, size) of f are read.
type segment struct {
	f        *os.File
	r        io.ReaderAt // what WriteTo reads f with
	size     int64
	start    int64
	es       []Entry
	fallback time.Time
}

// OpenHistory opens the files of a log in the order written (the rotated
// part first), with their indexes, and finds where the lines opts selects
// start: for since, from the index without reading the log; for tail, by
// reading backwards from the end in fixed chunks. found is false when none of
// the files exists. The caller must Close it (WriteTo does not).
func OpenHistory(paths []string, opts HistoryOptions) (h *History, found bool, err error) {
	h = &History{opts: opts}
	defer func() {
		if err != nil {
			h.Close()
			h = nil
		}
	}()
	for i, p := range paths {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return h, false, fmt.Errorf("logstamp: %w", err)
		}
		found = true
		s := segment{f: f, r: f}
		if i == len(paths)-1 && opts.Last != nil {
			s.r = opts.Last(f)
		}
		h.segs = append(h.segs, s)
		sp := &h.segs[len(h.segs)-1]
		fi, err := f.Stat()
		if err != nil {
			return h, false, fmt.Errorf("logstamp: %w", err)
		}
		sp.size, sp.fallback = fi.Size(), fi.ModTime()
		if sp.es, err = Load(IndexPath(p)); err != nil {
			return h, false, err
		}
		last := i == len(paths)-1
		if last && opts.WholeOnly && sp.size > 0 {
			q, err := prevNewline(f, sp.size, 0, nil)
			if err != nil {
				return h, false, err
			}
			sp.size = q + 1 // 0 when no line is whole
		}
		if last {
			h.End = sp.size
		}
		if err := sp.seekSince(opts.Since); err != nil {
			return h, false, err
		}
	}
	if opts.Tail >= 0 {
		if err := h.seekTail(); err != nil {
			return h, false, err
		}
	}
	return h, found, nil
}

// timeOf is the time of the line ending at end (past its newline): that of
// the first record at or past it, else the file's modification time.
func (s *segment) timeOf(end int64) time.Time {
	i := sort.Search(len(s.es), func(i int) bool { return s.es[i].Off >= end })
	if i < len(s.es) {
		return time.Unix(0, s.es[i].Time)
	}
	return s.fallback
}

// seekSince moves start to the line that holds the last offset whose record
// is older than since: every line ending at or before it is older too, since
// a line takes the time of the first record at or past its end. Records are
// scanned in order rather than searched, so a clock step back cannot hide a
// later line; the index is bounded (Sampler.MaxRecords).
func (s *segment) seekSince(since time.Time) error {
	if since.IsZero() {
		return nil
	}
	k := 0
	for k < len(s.es) && time.Unix(0, s.es[k].Time).Before(since) {
		k++
	}
	if k == 0 {
		return nil
	}
	p := min(s.es[k-1].Off, s.size)
	if p <= 0 {
		return nil
	}
	q, err := prevNewline(s.f, p, 0, nil)
	if err != nil {
		return err
	}
	s.start = q + 1
	return nil
}

// seekTail moves the start back from the end over the last Tail lines at or
// after since, reading backwards in chunks and stamping each line from its
// end; files wholly before those lines are dropped.
func (h *History) seekTail() error {
	need := h.opts.Tail
	buf := make([]byte, chunk)
	for si := len(h.segs) - 1; si >= 0; si-- {
		s := &h.segs[si]
		sc := backScanner{f: s.f, buf: buf}
		for end := s.size; end > s.start; {
			if need == 0 {
				s.start = end
				return h.drop(si)
			}
			q, err := sc.prev(end-1, s.start)
			if err != nil {
				return err
			}
			lineStart := s.start
			if q >= 0 {
				lineStart = q + 1
			}
			if h.opts.Since.IsZero() || !s.timeOf(end).Before(h.opts.Since) {
				need--
			}
			end = lineStart
		}
		if need == 0 {
			return h.drop(si)
		}
	}
	return nil
}

// drop closes the files before segment i.
func (h *History) drop(i int) error {
	for _, s := range h.segs[:i] {
		_ = s.f.Close()
	}
	h.segs = h.segs[i:]
	return nil
}

// WriteTo writes the selected lines to w, as AppendLine renders them.
func (h *History) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, chunk)
	cw := &countWriter{w: bw}
	br := bufio.NewReaderSize(nil, chunk)
	scan := make([]byte, chunk)
	var stamp []byte
	for i := range h.segs {
		s := &h.segs[i]
		br.Reset(io.NewSectionReader(s.r, s.start, s.size-s.start))
		pos := s.start
		for pos < s.size {
			line, err := br.ReadSlice('\n')
			var end int64
			long := false
			switch {
			case err == nil:
				end = pos + int64(len(line))
			case errors.Is(err, bufio.ErrBufferFull):
				// A line longer than the buffer: find its end without
				// holding it, for its time, then pass it on in pieces.
				long = true
				if end, err = nextNewline(s.r, s.f.Name(), pos+int64(len(line)), s.size, scan); err != nil {
					return cw.n, err
				}
			case err == io.EOF:
				if len(line) == 0 {
					pos = s.size
					continue
				}
				end = pos + int64(len(line))
			default:
				return cw.n, fmt.Errorf("logstamp: %w", err)
			}
			t := s.timeOf(end)
			keep := h.opts.Since.IsZero() || !t.Before(h.opts.Since)
			if keep && h.opts.Stamp {
				stamp = t.UTC().AppendFormat(stamp[:0], Layout)
				stamp = append(stamp, ' ')
				cw.Write(stamp)
			}
			for {
				if keep {
					if n := len(line); n > 0 && line[n-1] == '\n' {
						cw.Write(line[:n-1])
					} else {
						cw.Write(line)
					}
				}
				pos += int64(len(line))
				if !long || pos >= end {
					break
				}
				line, err = br.ReadSlice('\n')
				if err != nil && !errors.Is(err, bufio.ErrBufferFull) && (err != io.EOF || len(line) == 0) {
					if err == io.EOF {
						err = io.ErrUnexpectedEOF
					}
					return cw.n, fmt.Errorf("logstamp: %w", err)
				}
			}
			if keep {
				cw.Write(newline)
			}
			if cw.err != nil {
				return cw.n, cw.err
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return cw.n, err
	}
	return cw.n, cw.err
}

// Reader returns the history as a reader, written by a goroutine that ends
// when it is read to its end or closed; closing it closes the files too.
func (h *History) Reader() io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		_, err := h.WriteTo(pw)
		h.Close()
		pw.CloseWithError(err)
	}()
	return pr
}

// Close closes the files, and what Last wrapped one in if it is an
// io.Closer.
func (h *History) Close() error {
	for _, s := range h.segs {
		if c, ok := s.r.(io.Closer); ok && s.r != io.ReaderAt(s.f) {
			_ = c.Close()
		}
		_ = s.f.Close()
	}
	h.segs = nil
	return nil
}

var newline = []byte{'\n'}

// countWriter keeps the first error and the count, so WriteTo checks once a
// line.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
}

// backScanner finds newlines backwards in a file, keeping the last chunk it
// read.
type backScanner struct {
	f      *os.File
	buf    []byte
	lo, hi int64 // buf[:hi-lo] holds the file's bytes [lo, hi)
}

// prev returns the offset of the last newline in [floor, before), or -1.
func (b *backScanner) prev(before, floor int64) (int64, error) {
	hi := before
	for hi > floor {
		if !(b.lo < hi && hi <= b.hi) {
			lo := max(floor, hi-int64(len(b.buf)))
			if err := readFull(b.f, b.f.Name(), b.buf[:hi-lo], lo); err != nil {
				return -1, err
			}
			b.lo, b.hi = lo, hi
		}
		lo := max(floor, b.lo)
		if i := bytes.LastIndexByte(b.buf[lo-b.lo:hi-b.lo], '\n'); i >= 0 {
			return lo + int64(i), nil
		}
		hi = lo
	}
	return -1, nil
}

// prevNewline returns the offset of the last newline in [floor, before) of
// f, or -1; buf may be nil.
func prevNewline(f *os.File, before, floor int64, buf []byte) (int64, error) {
	if buf == nil {
		buf = make([]byte, chunk)
	}
	b := backScanner{f: f, buf: buf}
	return b.prev(before, floor)
}

// nextNewline returns the offset just past the first newline at or after
// from in f, or limit when there is none before it.
func nextNewline(f io.ReaderAt, name string, from, limit int64, buf []byte) (int64, error) {
	for from < limit {
		n := min(int64(len(buf)), limit-from)
		if err := readFull(f, name, buf[:n], from); err != nil {
			return 0, err
		}
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return from + int64(i) + 1, nil
		}
		from += n
	}
	return limit, nil
}

// readFull reads len(p) bytes at off; a file cut shorter meanwhile (a
// rotation) is an error.
func readFull(f io.ReaderAt, name string, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("logstamp: reading %s: %w", name, err)
}
