package process

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/logstamp"
)

// TimedLogs returns the task's lines with the times its log's index gives
// them (ADR 0034).
func (d *Driver) TimedLogs(ctx context.Context, taskID string, opts driver.LogOptions) (io.ReadCloser, error) {
	d.mu.Lock()
	lf, ok := d.logs[taskID]
	d.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: no logs known for task %s", driver.ErrGone, taskID)
	}
	if lf.path == "" {
		return emptyReader(), nil
	}
	return openTimedLogs(ctx, lf.path, d.logState(lf.path), opts, d.cfg.PollInterval)
}

func openTimedLogs(ctx context.Context, path string, st *logState, opts driver.LogOptions, poll time.Duration) (io.ReadCloser, error) {
	lf := logFile{path: path}
	// The history is found and opened under the lock, so a rotation cannot
	// move the bytes between finding a start and opening the files; it is
	// streamed after, a chunk at a time, so its memory does not grow with the
	// log (ADR 0034). The open .1 stays whole (rotation replaces it by a
	// rename); reads of the log go through rr, which follows a rotation.
	st.mu.RLock()
	gen := st.gen
	rr := &rotatingReader{lf: lf, st: st, gen: gen}
	h, _, err := logstamp.OpenHistory([]string{lf.old(), path}, logstamp.HistoryOptions{
		Since: opts.Since, Tail: opts.Tail, Stamp: opts.Timestamps, WholeOnly: opts.Follow,
		Last: func(f *os.File) io.ReaderAt { rr.f = f; return rr },
	})
	st.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("process: %w", err)
	}
	if !opts.Follow {
		return h.Reader(), nil
	}
	pr, pw := io.Pipe()
	fr := &followReader{PipeReader: pr, quit: make(chan struct{})}
	go fr.runTimed(ctx, pw, lf, st, gen, h, poll, opts)
	return fr, nil
}

// runTimed is run for stamped lines: it passes on whole lines only, each
// stamped from the index when the index covers it yet, else with the time it
// was read (at most a poll interval late).
func (fr *followReader) runTimed(ctx context.Context, pw *io.PipeWriter, lf logFile, st *logState, gen uint64, hist *logstamp.History, poll time.Duration, opts driver.LogOptions) {
	off := hist.End
	_, err := hist.WriteTo(pw)
	hist.Close()
	if err != nil {
		pw.CloseWithError(err)
		return
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	var pend []byte // a line not ended yet
	for {
		select {
		case <-ctx.Done():
			pw.Close()
			return
		case <-fr.quit:
			return
		case <-t.C:
		}
		now := time.Now()
		var out []byte
		stampNew := func(p string, data []byte, end int64) error {
			buf := append(pend, data...)
			n := bytes.LastIndexByte(buf, '\n')
			if n < 0 {
				pend = buf
				return nil
			}
			whole := buf[:n+1]
			pend = append([]byte(nil), buf[n+1:]...)
			es, err := logstamp.Load(logstamp.IndexPath(p))
			if err != nil {
				return err
			}
			base := end - int64(len(buf))
			for _, l := range logstamp.Filter(logstamp.Stamp(whole, base, es, now), opts.Since, -1) {
				out = logstamp.AppendLine(out, l, opts.Timestamps)
			}
			return nil
		}
		st.mu.RLock()
		var err error
		if st.gen != gen {
			var b []byte
			b, err = readFrom(lf.old(), off)
			if err == nil {
				err = stampNew(lf.old(), b, off+int64(len(b)))
			}
			gen, off = st.gen, 0
		}
		if err == nil {
			var b []byte
			b, err = readFrom(lf.path, off)
			off += int64(len(b))
			if err == nil && len(b) > 0 {
				err = stampNew(lf.path, b, off)
			}
		}
		st.mu.RUnlock()
		if err != nil {
			pw.CloseWithError(fmt.Errorf("process: following %s: %w", lf.path, err))
			return
		}
		if len(out) > 0 {
			if _, err := pw.Write(out); err != nil {
				return
			}
		}
	}
}

// rotatingReader reads the task's log for a history streamed after the lock
// is let go: each read is made under the lock, and once a rotation has moved
// the log (gen moved), from the new .1, which holds its bytes at the same
// offsets. A log that overshot its cap was copied without its start; reads
// there come up short and end the history with an error.
type rotatingReader struct {
	lf    logFile
	st    *logState
	gen   uint64
	f     *os.File // the log as opened; not closed here
	moved *os.File // the .1 it was rotated to
}

func (r *rotatingReader) ReadAt(p []byte, off int64) (int, error) {
	r.st.mu.RLock()
	defer r.st.mu.RUnlock()
	if r.st.gen == r.gen {
		return r.f.ReadAt(p, off)
	}
	if r.moved == nil {
		if r.st.gen != r.gen+1 {
			return 0, fmt.Errorf("process: %s rotated twice while read", r.lf.path)
		}
		f, err := os.Open(r.lf.old())
		if err != nil {
			return 0, fmt.Errorf("process: %w", err)
		}
		r.moved = f
	}
	return r.moved.ReadAt(p, off)
}

// Close closes the .1 it opened, if any; History.Close calls it.
func (r *rotatingReader) Close() error {
	r.st.mu.RLock()
	defer r.st.mu.RUnlock()
	if r.moved != nil {
		_ = r.moved.Close()
		r.moved = nil
	}
	return nil
}

var _ driver.TimedLogger = (*Driver)(nil)
