package agent

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/agent/agenttest"
	"github.com/berth-project/berth/internal/driver"
)

// engineDriver is a fake driver whose backend can be switched on and off,
// like a Docker Engine that starts after the agent.
type engineDriver struct {
	agenttest.Driver
	up atomic.Bool
}

func (d *engineDriver) Name() string { return "docker" }

func (d *engineDriver) Ping(context.Context) (string, error) {
	if d.up.Load() {
		return "1.41", nil
	}
	return "", errors.New("cannot connect to the engine")
}

// TestDriverComesUpLater checks that a driver whose backend is down when the
// agent starts is not offered, and is offered (the node registers again)
// once it answers; and withdrawn when it goes away again.
func TestDriverComesUpLater(t *testing.T) {
	h := newHarness(t)
	eng := &engineDriver{}
	h.cfg.Drivers = map[string]driver.Driver{"process": h.d, "docker": eng}
	h.cfg.DriverProbeInterval = 20 * time.Millisecond
	h.start()

	offered := func() []string {
		regs := h.m.Registrations()
		if len(regs) == 0 {
			return nil
		}
		return regs[len(regs)-1].Drivers
	}
	eventually(t, func() bool { return len(h.m.Registrations()) > 0 }, "the agent did not register")
	if got := offered(); !slices.Equal(got, []string{"process"}) {
		t.Fatalf("drivers offered with the engine down: %v, want [process]", got)
	}
	eng.up.Store(true)
	eventually(t, func() bool { return slices.Equal(offered(), []string{"docker", "process"}) },
		"the engine came up but the node still offers %v", offered())
	eng.up.Store(false)
	eventually(t, func() bool { return slices.Equal(offered(), []string{"process"}) },
		"the engine went away but the node still offers %v", offered())
}

// TestShutdownWithStaleGatewayAck checks that an acknowledgement left
// unsent when the gateway closed does not keep Shutdown's final report
// flush going until its deadline (a stopping agent once spun there).
func TestShutdownWithStaleGatewayAck(t *testing.T) {
	h := newHarness(t)
	a := h.start()
	eventually(t, func() bool { return len(h.m.Registrations()) > 0 }, "the agent did not register")
	h.stop()
	a.acks.mu.Lock()
	a.acks.dirty = true
	a.acks.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
