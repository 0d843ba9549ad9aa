package agent

import (
	"context"
	"sort"
	"sync"
	"time"
)

// DefaultDriverProbeInterval is how often a driver whose backend can be away
// (the Docker Engine) is checked.
const DefaultDriverProbeInterval = 10 * time.Second

// driverProber is an optional extra of a driver.Driver that depends on a
// backend that may be down or come up after the agent (a container engine).
// Such a driver is offered to the scheduler only while Ping succeeds.
type driverProber interface {
	Ping(ctx context.Context) (string, error)
}

// driverSet tracks which drivers are up.
type driverSet struct {
	mu   sync.Mutex
	down map[string]bool // drivers with a prober whose last ping failed
}

// availableDrivers returns the names of the drivers to offer, sorted.
func (a *Agent) availableDrivers() []string {
	a.drivers.mu.Lock()
	defer a.drivers.mu.Unlock()
	out := make([]string, 0, len(a.cfg.Drivers))
	for name := range a.cfg.Drivers {
		if !a.drivers.down[name] {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// probeDrivers pings every driver that has a prober and reports whether the
// set of available drivers changed. It logs each change.
func (a *Agent) probeDrivers(ctx context.Context) bool {
	changed := false
	for name, d := range a.cfg.Drivers {
		p, ok := d.(driverProber)
		if !ok {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		version, err := p.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		a.drivers.mu.Lock()
		if a.drivers.down == nil {
			a.drivers.down = map[string]bool{}
		}
		was, known := a.drivers.down[name]
		down := err != nil
		a.drivers.down[name] = down
		a.drivers.mu.Unlock()
		switch {
		case known && was == down:
		case down:
			a.log.Warn("driver is unavailable: its tasks are not placed on this node until it answers", "driver", name, "err", err)
			changed = changed || known
		default:
			a.log.Info("driver is available", "driver", name, "version", version)
			changed = changed || known
		}
	}
	return changed
}

// watchDrivers re-checks the drivers with a prober and registers the node
// again when the set it offers changes, so that an engine that starts after
// the agent (or goes away) is taken into account without a restart. Strays
// (containers no task owns) are removed only when the agent starts: removing
// them while tasks start could race with a new task's container.
func (a *Agent) watchDrivers(ctx context.Context, ls *logServer) {
	every := a.cfg.DriverProbeInterval
	if every <= 0 {
		every = DefaultDriverProbeInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if a.probeDrivers(ctx) {
			if a.register(ctx, ls) != nil {
				return
			}
		}
	}
}
