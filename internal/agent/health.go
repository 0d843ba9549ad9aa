package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
)

// healthEvent is a change of a task's health, from its checker to its runner.
type healthEvent struct {
	health string
	err    error // the last check's error, for unhealthy
}

// healthPolicy is a health check's timing with defaults filled in.
type healthPolicy struct {
	interval, timeout, startPeriod time.Duration
	retries                        int
	// listenGrace is how long after the start a refused connection, before
	// the first success, means "not listening yet" rather than a failure
	// (at least the start period).
	listenGrace time.Duration
	// quickFor is how long after the start the first success is looked for
	// every quickProbeInterval (then every startingProbeInterval).
	quickFor time.Duration
}

// quickProbeInterval is how often an HTTP or TCP check runs in its first
// StartHold, until its first success: the task holds a start slot until
// then, and every 100 ms of lag there would hold back the tasks queued
// behind it. A refused connection costs next to nothing.
const quickProbeInterval = 10 * time.Millisecond

// DefaultListenGrace is how long a task with an HTTP or TCP health check
// may take to start listening: until its first success, refused
// connections in this time after its start (or its start period, if
// longer) do not count as failures. A start storm on a small machine can
// hold a program back for many seconds; a program that never listens is
// still unhealthy after this grace and its retries.
const DefaultListenGrace = 60 * time.Second

// notListening reports whether a check failed because nothing serves on
// the port yet: the connection was refused, or accepted and then closed or
// reset before any answer — what Docker's userland proxy does for a
// published port while the container's program is not listening.
func notListening(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		// net/http's Transport reports a connection closed before the
		// first byte of an answer with this unexported error even on a
		// new connection, when it sees the close before the request was
		// written.
		err != nil && strings.Contains(err.Error(), "http: server closed idle connection")
}

func policyOf(h api.HealthCheck) healthPolicy {
	p := healthPolicy{
		interval:    h.Interval.D(),
		timeout:     h.Timeout.D(),
		startPeriod: h.StartPeriod.D(),
		retries:     h.Retries,
	}
	if p.interval <= 0 {
		p.interval = api.DefaultHealthInterval
	}
	if p.timeout <= 0 {
		p.timeout = min(p.interval, 10*time.Second)
	}
	if p.retries <= 0 {
		p.retries = api.DefaultHealthRetries
	}
	return p
}

// healthPolicy is hc's timing on this agent: the listen grace is the
// agent's, or the check's start period if that is longer.
func (a *Agent) healthPolicy(hc api.HealthCheck) healthPolicy {
	p := policyOf(hc)
	p.listenGrace = max(p.startPeriod, a.listenGrace)
	if hc.HTTP != nil || hc.TCP != nil {
		p.quickFor = StartHold
	}
	return p
}

// startHealth starts the health checker of a running task and returns the
// channel of its health changes. The checker stops when ctx ends, or after it
// sent "unhealthy".
func (a *Agent) startHealth(ctx context.Context, r *runner, st api.TaskStatus) <-chan healthEvent {
	t := r.task
	hc := *t.Spec.Health
	check := a.healthProbe(t, r.handle)
	initial := st.Health
	if initial != api.HealthHealthy {
		initial = api.HealthStarting
	}
	ch := make(chan healthEvent)
	go runHealth(ctx, a.clock, a.healthPolicy(hc), check, initial, st.StartedAt, ch)
	return ch
}

// startingProbeInterval is how often a check runs until its first success.
const startingProbeInterval = 100 * time.Millisecond

// runHealth checks every interval (more often until the first success). Health is "starting" until the first
// success, then "healthy"; retries consecutive failures make it "unhealthy",
// which ends the checker. Until a check succeeded, failures within the start
// period do not count, nor do refused connections within the listen grace
// (the program has not opened its port yet: it is still starting).
func runHealth(ctx context.Context, clock Clock, p healthPolicy, check func(context.Context) error,
	health string, startedAt time.Time, out chan<- healthEvent) {
	send := func(ev healthEvent) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	fails := 0
	lastCounted := startedAt
	for {
		// Until the first success, probe quickly so a task that comes up
		// fast is healthy (and serving) fast; failures still count at most
		// once per interval.
		wait := p.interval
		switch {
		case health == api.HealthHealthy:
		case clock.Now().Sub(startedAt) < p.quickFor:
			wait = quickProbeInterval
		case wait > startingProbeInterval:
			wait = startingProbeInterval
		}
		select {
		case <-ctx.Done():
			return
		case <-clock.After(wait):
		}
		cctx, cancel := context.WithTimeout(ctx, p.timeout)
		err := check(cctx)
		if err != nil && cctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %s: %w", p.timeout, err)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			fails = 0
			if health != api.HealthHealthy {
				health = api.HealthHealthy
				if !send(healthEvent{health: health}) {
					return
				}
			}
			continue
		}
		now := clock.Now()
		if health != api.HealthHealthy && now.Sub(startedAt) < p.startPeriod {
			continue
		}
		if health != api.HealthHealthy && notListening(err) && now.Sub(startedAt) < p.listenGrace {
			continue
		}
		if health != api.HealthHealthy && now.Sub(lastCounted) < p.interval {
			continue
		}
		lastCounted = now
		fails++
		if fails >= p.retries {
			send(healthEvent{health: api.HealthUnhealthy, err: err})
			return
		}
	}
}

// healthProbe returns the function that runs one check of t's health check.
// An exec check runs inside the task when its handle can (a container), on
// the host otherwise.
func (a *Agent) healthProbe(t api.Task, handle driver.Handle) func(context.Context) error {
	h := t.Spec.Health
	switch {
	case h.HTTP != nil:
		return httpProbe(a.probeHost(), t.Ports[h.HTTP.Port], h.HTTP.Path)
	case h.TCP != nil:
		return tcpProbe(a.probeHost(), t.Ports[h.TCP.Port])
	case len(h.Exec) > 0:
		env := taskEnv(t, a.NodeID())
		if ex, ok := handle.(driver.Execer); ok {
			return containerExecProbe(ex, h.Exec, env)
		}
		argv, err := expandCommand(h.Exec, env, t.Spec.Workdir, a.berth)
		if err != nil {
			return func(context.Context) error { return fmt.Errorf("exec check: %w", err) }
		}
		cred, err := credentialOf(t.Spec.User)
		if err != nil {
			return func(context.Context) error { return fmt.Errorf("exec check: %w", err) }
		}
		return execProbe(argv, envList(env), t.Spec.Workdir, cred)
	}
	return func(context.Context) error { return errors.New("no health check configured") }
}

// httpProbe checks with a GET of path on host:port; host is where the mesh
// dials the task (Agent.probeHost).
func httpProbe(host string, port int, path string) func(context.Context) error {
	if path == "" {
		path = "/"
	}
	target := "http://" + net.JoinHostPort(host, strconv.Itoa(port)) + path
	client := &http.Client{
		// A fresh connection per check: the check is that the task still
		// accepts connections, not that an old one is still open.
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		// 3xx counts as healthy: do not follow it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "berth-health-check")
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("GET %s: %w", target, unwrapURLError(err))
		}
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 399 {
			return fmt.Errorf("GET %s: status %d", target, resp.StatusCode)
		}
		return nil
	}
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

// tcpProbe checks that host:port accepts a connection.
func tcpProbe(host string, port int) func(context.Context) error {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("connect %s: %w", addr, err)
		}
		return c.Close()
	}
}

// containerExecProbe runs an exec check inside the task's container: ${VAR}
// references are expanded from the task's environment, which the container
// already has, and the program is looked up in the container, not on the
// host.
func containerExecProbe(ex driver.Execer, cmd []string, env map[string]string) func(context.Context) error {
	argv := make([]string, len(cmd))
	for i, a := range cmd {
		argv[i] = api.ExpandVars(a, env)
	}
	return func(ctx context.Context) error {
		code, out, err := ex.Exec(ctx, argv, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", argv[0], err)
		}
		if code == 0 {
			return nil
		}
		if text := strings.TrimSpace(out); text != "" {
			return fmt.Errorf("%s exited with code %d: %s", argv[0], code, text)
		}
		return fmt.Errorf("%s exited with code %d", argv[0], code)
	}
}

// execProbe runs argv in its own process group, which is killed when the
// check times out.
func execProbe(argv, env []string, dir string, cred *syscall.Credential) func(context.Context) error {
	return func(ctx context.Context) error {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = env
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = time.Second
		out := &driver.TailWriter{Max: 512}
		cmd.Stdout, cmd.Stderr = out, out
		err := cmd.Run()
		if err == nil {
			return nil
		}
		text := strings.TrimSpace(out.String())
		var ee *exec.ExitError
		if errors.As(err, &ee) && ctx.Err() == nil {
			if text != "" {
				return fmt.Errorf("%s exited with code %d: %s", argv[0], ee.ExitCode(), text)
			}
			return fmt.Errorf("%s exited with code %d", argv[0], ee.ExitCode())
		}
		return fmt.Errorf("%s: %w", argv[0], err)
	}
}

// credentialOf resolves a spec user ("name", "uid", "name:group",
// "uid:gid") to the credential exec checks run with; nil means the agent's
// own user.
func credentialOf(spec string) (*syscall.Credential, error) {
	if spec == "" {
		return nil, nil
	}
	name, group, hasGroup := strings.Cut(spec, ":")
	var uid, gid uint64
	u, err := lookupUser(name)
	switch {
	case err == nil:
		uid, _ = strconv.ParseUint(u.Uid, 10, 32)
		gid, _ = strconv.ParseUint(u.Gid, 10, 32)
	default:
		n, perr := strconv.ParseUint(name, 10, 32)
		if perr != nil {
			return nil, fmt.Errorf("unknown user %q: %w", name, err)
		}
		uid, gid = n, n
	}
	if hasGroup {
		if n, perr := strconv.ParseUint(group, 10, 32); perr == nil {
			gid = n
		} else {
			g, err := user.LookupGroup(group)
			if err != nil {
				return nil, fmt.Errorf("unknown group %q: %w", group, err)
			}
			gid, _ = strconv.ParseUint(g.Gid, 10, 32)
		}
	}
	if int(uid) == os.Getuid() && int(gid) == os.Getgid() {
		return nil, nil
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
