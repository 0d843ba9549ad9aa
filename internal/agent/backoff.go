package agent

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// backoff yields exponentially growing waits with jitter, for retrying calls
// to the manager. It is not safe for concurrent use.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max} }

// next returns the wait before the next attempt: the current step, less up to
// half of it at random, so that agents restarted together do not retry in
// lockstep.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur *= 2
	}
	if b.cur > b.max {
		b.cur = b.max
	}
	half := int64(b.cur / 2)
	if half <= 0 {
		return b.cur
	}
	return b.cur - time.Duration(rand.Int64N(half))
}

func (b *backoff) reset() { b.cur = 0 }

// sleepCtx waits d or until ctx is done; it reports whether the full wait
// elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// logLimiter rate-limits a repeated error log: the first failure is logged at
// once, later ones at most once per interval with a count of those skipped.
type logLimiter struct {
	every time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *logLimiter) log(log *slog.Logger, msg string, err error, attrs ...any) {
	l.mu.Lock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	l.mu.Unlock()
	args := append([]any{"err", err}, attrs...)
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Warn(msg, args...)
}

// ok ends a run of failures so the next one is logged at once.
func (l *logLimiter) ok() {
	l.mu.Lock()
	l.last, l.suppressed = time.Time{}, 0
	l.mu.Unlock()
}
