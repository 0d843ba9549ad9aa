package agent

import (
	"context"
	"errors"
	"time"
)

// followStream holds one of the manager's streams open until ctx ends: it
// opens it, hands every message to apply, and when the stream fails or
// closes, opens it again with back-off. Failures are logged through limit
// (at most once per its period, and once more when the stream recovers).
// onOpenErr, if set, sees every error of open and may return false to end the
// follow (after doing something about it, such as registering again).
func followStream[T any](ctx context.Context, a *Agent, what string, limit *logLimiter,
	open func(context.Context) (<-chan T, error), onOpenErr func(error) bool, apply func(T)) {
	bo := newBackoff(a.retryMin, 5*time.Second)
	for ctx.Err() == nil {
		ch, err := open(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			limit.log(a.log, what+" stream failed", err)
			if onOpenErr != nil && !onOpenErr(err) {
				return
			}
			sleepCtx(ctx, bo.next())
			continue
		}
	stream:
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-ch:
				if !ok {
					break stream
				}
				bo.reset()
				limit.ok()
				apply(m)
			}
		}
		if ctx.Err() == nil {
			limit.log(a.log, what+" stream closed; reconnecting", errors.New("stream closed"))
			sleepCtx(ctx, bo.next())
		}
	}
}
