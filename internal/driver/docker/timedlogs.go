package docker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"github.com/docker/docker/api/types/container"

	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/logstamp"
)

// TimedLogs returns the task's lines with the engine's own timestamps (ADR
// 0034). The engine cuts since and tail itself. Logs saved when the
// container was removed have no times: they get the saved file's
// modification time.
func (d *Driver) TimedLogs(ctx context.Context, taskID string, opts driver.LogOptions) (io.ReadCloser, error) {
	id, logDir, err := d.logSource(ctx, taskID)
	if err != nil {
		return nil, err
	}
	if id == "" {
		if logDir != "" {
			p := filepath.Join(logDir, taskID+".log")
			h, found, err := logstamp.OpenHistory([]string{p + ".1", p}, logstamp.HistoryOptions{Since: opts.Since, Tail: opts.Tail, Stamp: opts.Timestamps})
			if err == nil && found {
				return h.Reader(), nil
			}
		}
		return nil, fmt.Errorf("docker: no container of task %s: %w", taskID, driver.ErrGone)
	}
	if opts.Tail == 0 && !opts.Follow {
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	lo := container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: opts.Follow, Timestamps: opts.Timestamps, Tail: "all"}
	if opts.Tail >= 0 {
		lo.Tail = strconv.Itoa(opts.Tail)
	}
	if !opts.Since.IsZero() {
		lo.Since = fmt.Sprintf("%d.%09d", opts.Since.Unix(), opts.Since.Nanosecond())
	}
	return d.engineLogsWith(ctx, id, lo)
}

var _ driver.TimedLogger = (*Driver)(nil)
