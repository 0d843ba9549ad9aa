package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/logstamp"
)

// logFile is a task's log: path (the task writes it) and path.1 (the
// previous half), together at most max bytes.
type logFile struct {
	path string
	max  int64
}

func (lf logFile) old() string { return lf.path + ".1" }

// logState orders rotation against followers in this process: rotate holds
// mu to write and bumps gen; a follower reads under mu and, seeing gen move,
// knows the bytes it had not read yet are in .1 at the same offsets.
type logState struct {
	mu  sync.RWMutex
	gen uint64
}

// logState returns the shared state of the log at path.
func (d *Driver) logState(path string) *logState {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.logStates[path]
	if st == nil {
		st = &logState{}
		d.logStates[path] = st
	}
	return st
}

// capLogs samples the task's log into its time index every StampInterval
// (ADR 0034) and rotates it every LogCheckInterval while the handle holds
// resources, and once more when it releases them, so what the task wrote last
// is stamped and capped too. The task writes straight to the file; this
// goroutine exists for every task anyway, so stamping costs no goroutine and
// nothing at start.
func (h *handle) capLogs() {
	defer close(h.capDone)
	t := time.NewTicker(h.d.cfg.StampInterval)
	defer t.Stop()
	smp := logstamp.NewSampler(h.logf.path)
	defer smp.Close()
	var lastCheck time.Time
	for last := false; !last; {
		select {
		case <-t.C:
		case <-h.releasedCh:
			last = true
		}
		now := time.Now()
		if err := smp.Sample(now); err != nil {
			h.log.Debug("sampling the task's log", "err", err)
		}
		if !last && now.Sub(lastCheck) < h.d.cfg.LogCheckInterval {
			continue
		}
		lastCheck = now
		st := h.d.logState(h.logf.path)
		st.mu.Lock()
		rotated, skip, err := rotate(h.logf)
		if rotated {
			st.gen++
			if ierr := smp.Rotated(logstamp.IndexPath(h.logf.old()), skip); ierr != nil {
				h.log.Warn("rotating the task's log index", "err", ierr)
			}
		}
		st.mu.Unlock()
		if err != nil {
			h.log.Warn("rotating the task's log", "err", err)
		}
	}
}

// rotate copies the log to .1 and truncates it once it is over half the
// cap. The task's descriptor (O_APPEND) keeps working: its next write goes to
// the new end. The copy keeps the log's offsets, so a follower at offset N
// can resume from .1 at N. Only when the log has overshot the whole cap does
// the copy keep just its last half, to stay within the cap; skip is then the
// number of bytes left out at its start.
func rotate(lf logFile) (rotated bool, skip int64, err error) {
	fi, err := os.Stat(lf.path)
	if errors.Is(err, os.ErrNotExist) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("process: %w", err)
	}
	half := lf.max / 2
	if fi.Size() <= half {
		return false, 0, nil
	}
	src, err := os.Open(lf.path)
	if err != nil {
		return false, 0, fmt.Errorf("process: %w", err)
	}
	defer src.Close()
	if fi.Size() > lf.max {
		skip = fi.Size() - half
		if _, err := src.Seek(skip, io.SeekStart); err != nil {
			return false, 0, fmt.Errorf("process: %w", err)
		}
	}
	tmp := lf.old() + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return false, 0, fmt.Errorf("process: %w", err)
	}
	// Copy to EOF, then truncate at once: what the task writes between the
	// last read and the truncate (one syscall apart) is lost. Closing and
	// renaming come after, outside that window.
	_, err = io.Copy(dst, src)
	if err == nil {
		err = os.Truncate(lf.path, 0)
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, lf.old())
	}
	if err != nil {
		_ = os.Remove(tmp)
		return false, 0, fmt.Errorf("process: rotating %s: %w", lf.path, err)
	}
	return true, skip, nil
}

func readOptional(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("process: %w", err)
	}
	return b, nil
}

// readFrom reads p from offset off to its end.
func readFrom(p string, off int64) ([]byte, error) {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("process: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, fmt.Errorf("process: %w", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("process: %w", err)
	}
	return b, nil
}

func emptyReader() io.ReadCloser { return io.NopCloser(bytes.NewReader(nil)) }

// openLogs reads the log files: the last tail lines of .1 and the log, then,
// with follow, what is appended until ctx is done, polling every poll and
// following rotations made under st.
func openLogs(ctx context.Context, path string, st *logState, tail int, follow bool, poll time.Duration) (io.ReadCloser, error) {
	lf := logFile{path: path}
	st.mu.RLock()
	gen := st.gen
	old, err := readOptional(lf.old())
	var cur []byte
	if err == nil {
		cur, err = readOptional(path)
	}
	st.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	hist := driver.LastLines(append(old, cur...), tail)
	if !follow {
		return io.NopCloser(bytes.NewReader(hist)), nil
	}
	pr, pw := io.Pipe()
	fr := &followReader{PipeReader: pr, quit: make(chan struct{})}
	go fr.run(ctx, pw, lf, st, gen, hist, int64(len(cur)), poll)
	return fr, nil
}

// followReader streams a log; Close stops it.
type followReader struct {
	*io.PipeReader
	quit chan struct{}
	once sync.Once
}

// Close stops following.
func (fr *followReader) Close() error {
	fr.once.Do(func() { close(fr.quit) })
	return fr.PipeReader.Close()
}

func (fr *followReader) run(ctx context.Context, pw *io.PipeWriter, lf logFile, st *logState, gen uint64, hist []byte, off int64, poll time.Duration) {
	if len(hist) > 0 {
		if _, err := pw.Write(hist); err != nil {
			return
		}
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			pw.Close()
			return
		case <-fr.quit:
			return
		case <-t.C:
		}
		var out []byte
		st.mu.RLock()
		var err error
		if st.gen != gen {
			// Rotated: .1 is a copy of the log we were reading. (Two
			// rotations within one poll lose the older one.)
			out, err = readFrom(lf.old(), off)
			gen, off = st.gen, 0
		}
		if err == nil {
			var b []byte
			b, err = readFrom(lf.path, off)
			off += int64(len(b))
			out = append(out, b...)
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
