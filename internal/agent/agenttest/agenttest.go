// Package agenttest holds in-memory fakes for testing the node agent without
// real processes or a real manager: a Driver, a Manager and a Clock. It must
// not be used outside tests.
package agenttest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
)

// Driver is an in-memory driver.Driver: Start "runs" a task until the test
// ends it with Task.Exit or the agent stops it. Tasks survive in the Driver
// across agents, so a second agent on the same Driver can recover them. The
// optional function fields replace the default behaviour.
type Driver struct {
	// DriverName is returned by Name (default "process").
	DriverName string
	// StartFunc, if set, runs before the default Start; a non-nil error
	// fails the start.
	StartFunc func(ctx context.Context, spec driver.StartSpec) error
	// StopFunc, if set, runs at the start of every Handle.Stop.
	StopFunc func(t *Task, grace time.Duration)

	mu      sync.Mutex
	nextPID int
	tasks   map[string]*Task
	starts  map[string]int
}

var _ driver.Driver = (*Driver)(nil)

// Task is a task the fake driver runs.
type Task struct {
	Spec driver.StartSpec
	PID  int

	mu       sync.Mutex
	exited   chan struct{}
	exit     driver.Exit
	stops    int
	grace    time.Duration
	released bool
	cpuSet   string
	mems     string
}

// CPUSet returns the CPUs and memory nodes the task runs on: those it was
// started with, or the last ones given to Handle.UpdateCPUSet.
func (t *Task) CPUSet() (cpus, mems string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cpuSet, t.mems
}

// Name returns the driver's name.
func (d *Driver) Name() string {
	if d.DriverName == "" {
		return api.DriverProcess
	}
	return d.DriverName
}

// Start records the spec and returns a handle of a task that runs until it
// is ended.
func (d *Driver) Start(ctx context.Context, spec driver.StartSpec) (driver.Handle, error) {
	if d.StartFunc != nil {
		if err := d.StartFunc(ctx, spec); err != nil {
			return nil, err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tasks == nil {
		d.tasks, d.starts = map[string]*Task{}, map[string]int{}
	}
	d.nextPID++
	t := &Task{Spec: spec, PID: 1000 + d.nextPID, exited: make(chan struct{}), cpuSet: spec.CPUSet, mems: spec.MemNodes}
	d.tasks[spec.TaskID] = t
	d.starts[spec.TaskID]++
	return &Handle{d: d, t: t}, nil
}

// Recover re-attaches to a task this Driver runs; a task that exited, or
// one it never started, is gone.
func (d *Driver) Recover(ctx context.Context, st driver.State) (driver.Handle, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.tasks[st.TaskID]
	if t == nil || t.PID != st.PID || t.Exited() {
		return nil, fmt.Errorf("fake: task %s: %w", st.TaskID, driver.ErrGone)
	}
	return &Handle{d: d, t: t}, nil
}

// Task returns the task with the given id, or nil.
func (d *Driver) Task(id string) *Task {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tasks[id]
}

// Starts returns how many times a task was started.
func (d *Driver) Starts(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.starts[id]
}

// Running returns the ids of the tasks that have not exited, sorted.
func (d *Driver) Running() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ids []string
	for id, t := range d.tasks {
		if !t.Exited() {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// Exit ends the task as if its process exited. It is a no-op on a task that
// already ended.
func (t *Task) Exit(e driver.Exit) {
	t.mu.Lock()
	defer t.mu.Unlock()
	select {
	case <-t.exited:
		return
	default:
	}
	t.exit = e
	close(t.exited)
}

// Exited reports whether the task ended.
func (t *Task) Exited() bool {
	select {
	case <-t.exited:
		return true
	default:
		return false
	}
}

// Stops returns how many times Stop was called and the last grace period.
func (t *Task) Stops() (int, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stops, t.grace
}

// Released reports whether a Stop released the task's resources.
func (t *Task) Released() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.released
}

// Handle is the fake driver's handle of one task.
type Handle struct {
	d *Driver
	t *Task
}

var (
	_ driver.Handle        = (*Handle)(nil)
	_ driver.CPUSetUpdater = (*Handle)(nil)
)

// UpdateCPUSet records new CPUs (and memory nodes, unless mems is empty)
// for a task that has not ended; see Task.CPUSet.
func (h *Handle) UpdateCPUSet(cpus, mems string) error {
	if h.t.Exited() {
		return fmt.Errorf("fake: task %s: %w", h.t.Spec.TaskID, driver.ErrGone)
	}
	h.t.mu.Lock()
	defer h.t.mu.Unlock()
	h.t.cpuSet = cpus
	if mems != "" {
		h.t.mems = mems
	}
	return nil
}

// State returns the task's saved state.
func (h *Handle) State() driver.State {
	return driver.State{Driver: h.d.Name(), TaskID: h.t.Spec.TaskID, PID: h.t.PID, StartTime: uint64(h.t.PID)}
}

// Wait blocks until the task ends or ctx is done.
func (h *Handle) Wait(ctx context.Context) (driver.Exit, error) {
	select {
	case <-h.t.exited:
		h.t.mu.Lock()
		defer h.t.mu.Unlock()
		return h.t.exit, nil
	case <-ctx.Done():
		return driver.Exit{}, ctx.Err()
	}
}

// Stop ends the task as if by SIGTERM and releases it.
func (h *Handle) Stop(ctx context.Context, grace time.Duration) error {
	if h.d.StopFunc != nil {
		h.d.StopFunc(h.t, grace)
	}
	h.t.mu.Lock()
	h.t.stops++
	h.t.grace = grace
	h.t.released = true
	h.t.mu.Unlock()
	h.t.Exit(driver.Exit{Code: -1, Signal: 15})
	return nil
}

// LogDriver is a Driver that also keeps logs (driver.Logger).
type LogDriver struct {
	Driver

	lmu  sync.Mutex
	logs map[string]string
}

var (
	_ driver.Driver = (*LogDriver)(nil)
	_ driver.Logger = (*LogDriver)(nil)
)

// SetLogs sets a task's output.
func (d *LogDriver) SetLogs(id, text string) {
	d.lmu.Lock()
	defer d.lmu.Unlock()
	if d.logs == nil {
		d.logs = map[string]string{}
	}
	d.logs[id] = text
}

// Logs returns the task's output; tail and follow are ignored.
func (d *LogDriver) Logs(ctx context.Context, id string, tail int, follow bool) (io.ReadCloser, error) {
	d.lmu.Lock()
	defer d.lmu.Unlock()
	s, ok := d.logs[id]
	if !ok {
		return nil, fmt.Errorf("fake: no logs of %s: %w", id, driver.ErrGone)
	}
	return io.NopCloser(bytes.NewReader([]byte(s))), nil
}

// Manager is an in-memory agent.Manager. The test pushes assignment sets
// with Assign; every new stream first gets the latest set, as the real
// manager sends the full set on connect.
type Manager struct {
	// RegisterFunc, if set, replaces the default Register (which keeps the
	// id sent, or gives "node-1").
	RegisterFunc func(ctx context.Context, reg api.NodeRegistration) (api.Node, error)
	// AssignmentsFunc, if set, runs first; a non-nil error fails the call.
	AssignmentsFunc func(ctx context.Context, nodeID string) error
	// ReportFunc, if set, runs first; a non-nil error fails the report (it
	// is not recorded).
	ReportFunc func(ctx context.Context, nodeID string, rep api.StatusReport) error
	// Echo makes accepted reports change the current assignment set, as the
	// real manager's store does: each reported task takes the reported
	// status (a terminal one leaves the set) and every stream gets the new
	// set.
	Echo bool

	mu       sync.Mutex
	regs     []api.NodeRegistration
	reports  []api.StatusReport
	latest   map[string]api.TaskStatus
	current  *api.Assignments
	streams  map[chan api.Assignments]struct{}
	revision int64
}

// Register records reg and returns a node.
func (m *Manager) Register(ctx context.Context, reg api.NodeRegistration) (api.Node, error) {
	m.mu.Lock()
	m.regs = append(m.regs, reg)
	m.mu.Unlock()
	if m.RegisterFunc != nil {
		return m.RegisterFunc(ctx, reg)
	}
	id := reg.NodeID
	if id == "" {
		id = "node-1"
	}
	return api.Node{ID: id, Hostname: reg.Hostname, Status: api.NodeReady}, nil
}

// Registrations returns every registration received.
func (m *Manager) Registrations() []api.NodeRegistration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]api.NodeRegistration(nil), m.regs...)
}

// Assignments opens a stream; it closes when ctx ends or Break is called.
func (m *Manager) Assignments(ctx context.Context, nodeID string) (<-chan api.Assignments, error) {
	if m.AssignmentsFunc != nil {
		if err := m.AssignmentsFunc(ctx, nodeID); err != nil {
			return nil, err
		}
	}
	ch := make(chan api.Assignments, 64)
	m.mu.Lock()
	if m.streams == nil {
		m.streams = map[chan api.Assignments]struct{}{}
	}
	m.streams[ch] = struct{}{}
	if m.current != nil {
		ch <- *m.current
	}
	m.mu.Unlock()
	go func() {
		<-ctx.Done()
		m.closeStream(ch)
	}()
	return ch, nil
}

func (m *Manager) closeStream(ch chan api.Assignments) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.streams[ch]; ok {
		delete(m.streams, ch)
		close(ch)
	}
}

// Assign sends a new full set of tasks to every open stream.
func (m *Manager) Assign(tasks ...api.Task) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revision++
	as := api.Assignments{Revision: m.revision, Tasks: tasks}
	m.current = &as
	for ch := range m.streams {
		ch <- as
	}
}

// Break closes every open stream, as a broken connection would.
func (m *Manager) Break() {
	m.mu.Lock()
	var chs []chan api.Assignments
	for ch := range m.streams {
		chs = append(chs, ch)
	}
	m.mu.Unlock()
	for _, ch := range chs {
		m.closeStream(ch)
	}
}

// Streams returns how many streams are open.
func (m *Manager) Streams() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.streams)
}

// Report records a report (unless ReportFunc fails it).
func (m *Manager) Report(ctx context.Context, nodeID string, rep api.StatusReport) error {
	if m.ReportFunc != nil {
		if err := m.ReportFunc(ctx, nodeID, rep); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reports = append(m.reports, rep)
	if m.latest == nil {
		m.latest = map[string]api.TaskStatus{}
	}
	for _, u := range rep.Tasks {
		m.latest[u.ID] = u.Status
	}
	if m.Echo && m.current != nil && len(rep.Tasks) > 0 {
		m.echoLocked(rep)
	}
	return nil
}

// echoLocked applies a report to the current assignment set and sends the
// new set. m.mu is held.
func (m *Manager) echoLocked(rep api.StatusReport) {
	upd := map[string]api.TaskStatus{}
	for _, u := range rep.Tasks {
		upd[u.ID] = u.Status
	}
	tasks := make([]api.Task, 0, len(m.current.Tasks))
	for _, t := range m.current.Tasks {
		if st, ok := upd[t.ID]; ok {
			if st.State.Terminal() {
				continue
			}
			t.Status = st
		}
		tasks = append(tasks, t)
	}
	m.revision++
	as := api.Assignments{Revision: m.revision, Tasks: tasks}
	m.current = &as
	for ch := range m.streams {
		select {
		case ch <- as:
		default: // a slow reader gets a later set
		}
	}
}

// Stored returns the status of a task in the current assignment set.
func (m *Manager) Stored(id string) (api.TaskStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.current == nil {
		return api.TaskStatus{}, false
	}
	for _, t := range m.current.Tasks {
		if t.ID == id {
			return t.Status, true
		}
	}
	return api.TaskStatus{}, false
}

// Reports returns every report received.
func (m *Manager) Reports() []api.StatusReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]api.StatusReport(nil), m.reports...)
}

// Status returns the latest status reported for a task.
func (m *Manager) Status(id string) (api.TaskStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.latest[id]
	return st, ok
}

// History returns every status reported for a task, in order.
func (m *Manager) History(id string) []api.TaskStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []api.TaskStatus
	for _, r := range m.reports {
		for _, u := range r.Tasks {
			if u.ID == id {
				out = append(out, u.Status)
			}
		}
	}
	return out
}

// Clock is a manual clock: time moves only with Advance.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

// NewClock returns a clock set to t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After fires once the clock has been advanced by d.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	return ch
}

// Advance moves the clock forward and fires the timers that are due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
			continue
		}
		kept = append(kept, w)
	}
	c.waiters = kept
}

// HasWaiter reports whether some After call waits for exactly time t.
func (c *Clock) HasWaiter(t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.waiters {
		if w.at.Equal(t) {
			return true
		}
	}
	return false
}
