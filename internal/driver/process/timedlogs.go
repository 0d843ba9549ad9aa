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
	st.mu.RLock()
	gen := st.gen
	var lines []logstamp.Line
	var off int64
	var err error
	for _, p := range []string{lf.old(), path} {
		var b []byte
		var es []logstamp.Entry
		b, err = readOptional(p)
		if err == nil {
			es, err = logstamp.Load(logstamp.IndexPath(p))
		}
		if err != nil {
			break
		}
		mt := time.Now()
		if fi, serr := os.Stat(p); serr == nil {
			mt = fi.ModTime()
		}
		ls := logstamp.Stamp(b, 0, es, mt)
		off = int64(len(b))
		if p == path && opts.Follow && len(b) > 0 && b[len(b)-1] != '\n' {
			// The follower passes this line on once it is whole.
			off -= int64(len(ls[len(ls)-1].Text))
			ls = ls[:len(ls)-1]
		}
		lines = append(lines, ls...)
	}
	st.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	lines = logstamp.Filter(lines, opts.Since, opts.Tail)
	if !opts.Follow {
		return io.NopCloser(logstamp.NewReader(lines, opts.Timestamps)), nil
	}
	hist := logstamp.Format(lines, opts.Timestamps)
	pr, pw := io.Pipe()
	fr := &followReader{PipeReader: pr, quit: make(chan struct{})}
	go fr.runTimed(ctx, pw, lf, st, gen, hist, off, poll, opts)
	return fr, nil
}

// runTimed is run for stamped lines: it passes on whole lines only, each
// stamped from the index when the index covers it yet, else with the time it
// was read (at most a poll interval late).
func (fr *followReader) runTimed(ctx context.Context, pw *io.PipeWriter, lf logFile, st *logState, gen uint64, hist []byte, off int64, poll time.Duration, opts driver.LogOptions) {
	if len(hist) > 0 {
		if _, err := pw.Write(hist); err != nil {
			return
		}
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

var _ driver.TimedLogger = (*Driver)(nil)
