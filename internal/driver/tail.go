package driver

import (
	"bytes"
	"sync"
)

// TailWriter keeps the last Max bytes written to it, for the output of a
// short command (an exec health check) shown in an error. It is safe for
// concurrent writes.
type TailWriter struct {
	Max int

	mu  sync.Mutex
	buf bytes.Buffer
}

// Write keeps p, dropping the oldest bytes beyond Max.
func (w *TailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if extra := w.buf.Len() - w.Max; extra > 0 {
		w.buf.Next(extra)
	}
	return len(p), nil
}

// String returns what is kept.
func (w *TailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
