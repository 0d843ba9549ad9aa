// Package docker is the docker driver: it runs a task as a container on a
// Docker Engine, through the engine's API (the official Go client, with API
// version negotiation, so Engine 20.10 / API 1.41 and current engines both
// work). It implements driver.Driver, driver.Logger and driver.StrayRemover;
// its handles implement driver.Statser and driver.CPUSetUpdater.
//
// It must not depend on the agent's lifetime (containers keep running when
// the agent dies; Recover adopts them by id and label) and it must only ever
// touch containers it labelled: every container it creates carries
// LabelTask, LabelService, LabelSlot and LabelNode, and every lookup,
// adoption and removal checks them.
//
// # Choices (docs/adr/0015-docker-driver.md has the reasons)
//
// Hardened by default: read-only root filesystem, all capabilities dropped,
// no-new-privileges, never privileged, no devices, the engine's default
// seccomp and AppArmor profiles, a private network, PID and IPC namespace,
// an init process (docker-init) as PID 1 so signals reach the program and
// zombies are reaped, and never root unless the spec says so: an image
// whose user is root runs as 65534:65534 unless RunAsRoot. Each relaxation
// is a field of driver.ContainerOptions, from a field of the task spec.
//
// Command replaces the image's ENTRYPOINT and CMD together (it is the whole
// argv, as for the process driver); an empty command runs the image's own.
//
// Ports are published, not shared through host networking: container port
// = host port, so the PORT_* values the task reads stay right inside the
// container, bound on Config.PublishIP (127.0.0.1 by default).
//
// Logs go to the engine's json-file log driver, capped at LogMaxBytes; they
// are read back through the engine's log stream. Before the driver removes a
// container it copies its logs to <LogDir>/<task>.log, so the logs of an
// ended task stay readable (the agent reads that file once the container
// is gone).
package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	errdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	dnetwork "github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/berth-project/berth/internal/driver"
)

// Name is the driver's name in specs.
const Name = "docker"

// Labels the driver puts on every container it creates.
const (
	LabelTask    = "io.berth.task"
	LabelService = "io.berth.service"
	LabelSlot    = "io.berth.slot"
	LabelNode    = "io.berth.node"
)

// Defaults for Config.
const (
	DefaultPublishIP     = "127.0.0.1"
	DefaultEngineTimeout = 30 * time.Second
	DefaultLogMaxBytes   = 10 << 20
	// NobodyUser is the user a root image runs as without RunAsRoot.
	NobodyUser = "65534:65534"
)

// Errors of the driver. They wrap driver.ErrInvalid where retrying cannot
// help.
var (
	// ErrEngine means the Docker Engine did not answer.
	ErrEngine = errors.New("docker: engine not reachable")
	// ErrImageNotFound means the image is not on the node and may not, or
	// could not, be pulled.
	ErrImageNotFound = fmt.Errorf("docker: image not found: %w", driver.ErrInvalid)
	// ErrBadReference means the image reference cannot be parsed.
	ErrBadReference = fmt.Errorf("docker: invalid image reference: %w", driver.ErrInvalid)
)

// Config configures a Driver.
type Config struct {
	// Client talks to the engine. Nil makes one from the environment
	// (DOCKER_HOST and friends), or from Host when it is set.
	Client *client.Client
	// Host is the engine's address (unix:///var/run/docker.sock) when
	// Client is nil; empty uses DOCKER_HOST or the default socket.
	Host string
	// Logger receives the driver's own messages. Default: discarded.
	Logger *slog.Logger
	// PublishIP is the host address ports are published on. Default
	// 127.0.0.1: the node's gateway reaches tasks there.
	PublishIP string
	// EngineTimeout is how long a running task's engine may stay
	// unreachable before Wait gives the task up as lost. Default 30s.
	EngineTimeout time.Duration
	// LogMaxBytes caps a task's logs when its spec does not. Default 10 MiB.
	LogMaxBytes int64
	// Now stamps stats. Default time.Now.
	Now func() time.Time
}

// Driver runs tasks as Docker containers. It is safe for concurrent use.
type Driver struct {
	cfg   Config
	cli   *client.Client
	own   bool // cli was made here: Close closes it
	log   *slog.Logger
	ctx   context.Context // ends with Close: stops the handles' watchers
	close context.CancelFunc

	mu      sync.Mutex
	handles map[string]*handle // by task id
	bridge  netip.Addr         // the bridge network's gateway, once known
	logDirs map[string]string  // task id → LogDir, for tasks seen here
}

// New returns a docker driver. It does not contact the engine; Ping does.
func New(cfg Config) (*Driver, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PublishIP == "" {
		cfg.PublishIP = DefaultPublishIP
	}
	if cfg.EngineTimeout <= 0 {
		cfg.EngineTimeout = DefaultEngineTimeout
	}
	if cfg.LogMaxBytes == 0 {
		cfg.LogMaxBytes = DefaultLogMaxBytes
	}
	if cfg.LogMaxBytes < 0 {
		return nil, fmt.Errorf("docker: LogMaxBytes %d is negative", cfg.LogMaxBytes)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &Driver{cfg: cfg, cli: cfg.Client, log: cfg.Logger.WithGroup("docker"),
		handles: map[string]*handle{}, logDirs: map[string]string{}}
	if d.cli == nil {
		opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
		if cfg.Host != "" {
			opts = append(opts, client.WithHost(cfg.Host))
		}
		c, err := client.NewClientWithOpts(opts...)
		if err != nil {
			return nil, fmt.Errorf("docker: client: %w", err)
		}
		d.cli, d.own = c, true
	}
	d.ctx, d.close = context.WithCancel(context.Background())
	return d, nil
}

// Close stops the driver's background work and closes its client. Containers
// keep running.
func (d *Driver) Close() error {
	d.close()
	if d.own {
		return d.cli.Close()
	}
	return nil
}

// Client returns the engine client the driver uses.
func (d *Driver) Client() *client.Client { return d.cli }

// Name returns "docker".
func (d *Driver) Name() string { return Name }

// Ping checks that the engine answers and negotiates the API version. It
// returns the engine's API version.
func (d *Driver) Ping(ctx context.Context) (string, error) {
	p, err := d.cli.Ping(ctx)
	if err != nil {
		return "", d.engineErr("ping", err)
	}
	d.cli.NegotiateAPIVersionPing(p)
	return d.cli.ClientVersion(), nil
}

// engineErr wraps err from the engine; a connection failure becomes
// ErrEngine.
func (d *Driver) engineErr(what string, err error) error {
	if isConnErr(err) {
		return fmt.Errorf("%w at %s (%s): %w", ErrEngine, d.cli.DaemonHost(), what, err)
	}
	return fmt.Errorf("docker: %s: %w", what, err)
}

// isConnErr reports whether err is the engine's socket failing.
func isConnErr(err error) bool { return client.IsErrConnectionFailed(err) }

// Start creates and starts the task's container, pulling its image first
// as its pull policy says. A bad reference, a missing image that may not be
// pulled, and a program that cannot be run are ErrInvalid; an unreachable
// engine is ErrEngine (retry later); a failed pull is a plain error.
func (d *Driver) Start(ctx context.Context, spec driver.StartSpec) (driver.Handle, error) {
	if spec.TaskID == "" {
		return nil, fmt.Errorf("docker: no task id: %w", driver.ErrInvalid)
	}
	if spec.Image == "" {
		return nil, fmt.Errorf("docker: task %s has no image: %w", spec.TaskID, driver.ErrInvalid)
	}
	ref, err := reference.ParseNormalizedNamed(spec.Image)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrBadReference, spec.Image, err)
	}
	img, err := d.ensureImage(ctx, reference.TagNameOnly(ref).String(), spec.Image, spec.Container.Pull)
	if err != nil {
		return nil, err
	}
	logMax := spec.LogMaxBytes
	if logMax <= 0 {
		logMax = d.cfg.LogMaxBytes
	}
	var bridge string
	if ip, err := d.BridgeGateway(ctx); err == nil {
		bridge = ip.String()
	}
	cfg, hc, err := containerConfig(spec, imageUser(img), d.cfg.PublishIP, bridge, logMax)
	if err != nil {
		return nil, err
	}
	name := ContainerName(spec)
	created, err := d.cli.ContainerCreate(ctx, cfg, hc, nil, nil, name)
	if errdefs.IsConflict(err) {
		// A container of this very task is left from a start the agent did
		// not finish: it never ran for the manager, so replace it.
		if rerr := d.removeIfTask(ctx, name, spec.TaskID); rerr != nil {
			return nil, rerr
		}
		created, err = d.cli.ContainerCreate(ctx, cfg, hc, nil, nil, name)
	}
	if err != nil {
		if errdefs.IsInvalidArgument(err) {
			return nil, fmt.Errorf("docker: create container for task %s: %v: %w", spec.TaskID, err, driver.ErrInvalid)
		}
		return nil, d.engineErr("create container for task "+spec.TaskID, err)
	}
	id := created.ID
	discard := func() {
		// Keep nothing of a container that did not start.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		_ = d.cli.ContainerRemove(rctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
		cancel()
	}
	if err := d.checkPaths(ctx, id, spec); err != nil {
		discard()
		return nil, err
	}
	d.rememberLogDir(spec.TaskID, spec.LogDir)
	if err := d.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		discard()
		if errdefs.IsInvalidArgument(err) || errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("docker: start container for task %s: %v: %w", spec.TaskID, err, driver.ErrInvalid)
		}
		return nil, d.engineErr("start container for task "+spec.TaskID, err)
	}
	h := d.newHandle(spec.TaskID, id, spec.LogDir)
	d.log.Debug("started container", "task", spec.TaskID, "container", id, "image", spec.Image)
	return h, nil
}

// checkPaths checks, in the created container's filesystem (its mounts
// included), that an absolute program exists and is executable and that
// the workdir is a directory. The init process would otherwise start fine
// and only then fail to run the program: a bad spec would look like a task
// that exits at once.
func (d *Driver) checkPaths(ctx context.Context, id string, spec driver.StartSpec) error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("docker: task %s: %s: %w", spec.TaskID, fmt.Sprintf(format, args...), driver.ErrInvalid)
	}
	if len(spec.Command) > 0 && path.IsAbs(spec.Command[0]) {
		prog := spec.Command[0]
		st, err := d.cli.ContainerStatPath(ctx, id, prog)
		switch {
		case errdefs.IsNotFound(err):
			return invalid("program %s does not exist in the container", prog)
		case err != nil:
			return d.engineErr("stat "+prog+" in the container of task "+spec.TaskID, err)
		case st.Mode.IsDir():
			return invalid("program %s is a directory", prog)
		case st.Mode&os.ModeSymlink == 0 && st.Mode.Perm()&0o111 == 0:
			return invalid("program %s is not executable", prog)
		}
	}
	if spec.Workdir != "" {
		st, err := d.cli.ContainerStatPath(ctx, id, spec.Workdir)
		switch {
		case errdefs.IsNotFound(err):
			return invalid("workdir %s does not exist in the container", spec.Workdir)
		case err != nil:
			return d.engineErr("stat "+spec.Workdir+" in the container of task "+spec.TaskID, err)
		case !st.Mode.IsDir() && st.Mode&os.ModeSymlink == 0:
			return invalid("workdir %s is not a directory", spec.Workdir)
		}
	}
	return nil
}

// ContainerName is the name of a task's container:
// berth.<service>.<slot>.<task id>, with characters the engine refuses
// replaced by '_'.
func ContainerName(spec driver.StartSpec) string {
	name := "berth." + spec.ServiceName + "." + strconv.Itoa(spec.Slot) + "." + spec.TaskID
	b := []byte(name)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
		if !ok {
			b[i] = '_'
		}
	}
	return string(b)
}

// ensureImage makes sure the image is on the node as policy says and returns
// its inspection.
func (d *Driver) ensureImage(ctx context.Context, tagged, asGiven, policy string) (image.InspectResponse, error) {
	inspect := func() (image.InspectResponse, error) {
		img, err := d.cli.ImageInspect(ctx, tagged)
		if err != nil && !errdefs.IsNotFound(err) {
			return img, d.engineErr("inspect image "+asGiven, err)
		}
		return img, err
	}
	switch policy {
	case "", "if-not-present":
		img, err := inspect()
		if err == nil || !errdefs.IsNotFound(err) {
			return img, err
		}
	case "never":
		img, err := inspect()
		if errdefs.IsNotFound(err) {
			return img, fmt.Errorf("%w: %q is not on this node and pull is never", ErrImageNotFound, asGiven)
		}
		return img, err
	case "always":
	default:
		return image.InspectResponse{}, fmt.Errorf("docker: unknown pull policy %q: %w", policy, driver.ErrInvalid)
	}
	if err := d.pull(ctx, tagged, asGiven); err != nil {
		return image.InspectResponse{}, err
	}
	img, err := inspect()
	if errdefs.IsNotFound(err) {
		return img, fmt.Errorf("%w: %q is still missing after a pull", ErrImageNotFound, asGiven)
	}
	return img, err
}

// pull pulls ref and reads the engine's progress stream to its end: a
// failure may come as an error message in the stream.
func (d *Driver) pull(ctx context.Context, ref, asGiven string) error {
	rc, err := d.cli.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		if isConnErr(err) {
			return d.engineErr("pull image "+asGiven, err)
		}
		return fmt.Errorf("docker: pull image %q failed: %w", asGiven, err)
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	for {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("docker: pull image %q: reading the engine's progress: %w", asGiven, err)
		}
		if msg.Error != "" || msg.ErrorDetail.Message != "" {
			m := msg.ErrorDetail.Message
			if m == "" {
				m = msg.Error
			}
			return fmt.Errorf("docker: pull image %q failed: %s", asGiven, m)
		}
	}
}

// imageUser is the user the image runs as ("" for root by default).
func imageUser(img image.InspectResponse) string {
	if img.Config == nil {
		return ""
	}
	return img.Config.User
}

// removeIfTask removes the container called name if it belongs to task.
func (d *Driver) removeIfTask(ctx context.Context, name, task string) error {
	c, err := d.cli.ContainerInspect(ctx, name)
	if err != nil {
		return d.engineErr("inspect "+name, err)
	}
	if c.Config == nil || c.Config.Labels[LabelTask] != task {
		return fmt.Errorf("docker: a container named %s exists and is not task %s's: %w", name, task, driver.ErrInvalid)
	}
	if err := d.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !errdefs.IsNotFound(err) {
		return d.engineErr("remove leftover container "+name, err)
	}
	return nil
}

func (d *Driver) rememberLogDir(task, dir string) {
	if dir == "" {
		return
	}
	d.mu.Lock()
	d.logDirs[task] = dir
	d.mu.Unlock()
}

// extra is what State.Extra holds.
type extra struct {
	LogDir string `json:"log_dir,omitempty"`
}

// Recover adopts the container of a task started by an earlier run of the
// agent: by the saved container id, or, when that is missing, by the task
// label. It returns ErrGone when the container is gone, belongs to another
// task, or has ended (it then saves the logs and removes the container).
func (d *Driver) Recover(ctx context.Context, st driver.State) (driver.Handle, error) {
	if st.Driver != Name {
		return nil, fmt.Errorf("docker: cannot recover a %q task: %w", st.Driver, driver.ErrInvalid)
	}
	var ex extra
	if len(st.Extra) > 0 {
		_ = json.Unmarshal(st.Extra, &ex) // a bad extra only loses the log copy
	}
	id := st.ContainerID
	if id == "" {
		found, err := d.findTask(ctx, st.TaskID)
		if err != nil {
			return nil, err
		}
		if found == "" {
			return nil, fmt.Errorf("docker: no container of task %s: %w", st.TaskID, driver.ErrGone)
		}
		id = found
	}
	c, err := d.cli.ContainerInspect(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("docker: container %s of task %s: %w", short(id), st.TaskID, driver.ErrGone)
	}
	if err != nil {
		return nil, d.engineErr("inspect container of task "+st.TaskID, err)
	}
	if c.Config == nil || c.Config.Labels[LabelTask] != st.TaskID {
		// Someone else's container: never touch it.
		return nil, fmt.Errorf("docker: container %s is not task %s's: %w", short(id), st.TaskID, driver.ErrGone)
	}
	d.rememberLogDir(st.TaskID, ex.LogDir)
	h := d.newHandle(st.TaskID, c.ID, ex.LogDir)
	if c.State == nil || !c.State.Running && !c.State.Paused && !c.State.Restarting {
		if err := h.Stop(ctx, 0); err != nil {
			d.log.Warn("cannot remove the ended container of a task", "task", st.TaskID, "container", short(c.ID), "err", err)
		}
		return nil, fmt.Errorf("docker: container %s of task %s has ended: %w", short(c.ID), st.TaskID, driver.ErrGone)
	}
	return h, nil
}

// findTask returns the id of the container labelled with task, or "".
func (d *Driver) findTask(ctx context.Context, task string) (string, error) {
	list, err := d.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", LabelTask+"="+task))})
	if err != nil {
		return "", d.engineErr("list containers", err)
	}
	for _, c := range list {
		if c.Labels[LabelTask] == task {
			return c.ID, nil
		}
	}
	return "", nil
}

// RemoveStrays removes the containers labelled with node nodeID whose task
// is not in keep (a stray left by an agent that died between starting a
// task and recording it, or a container whose task record was lost). It
// returns the task ids it removed. It does nothing for an empty nodeID.
func (d *Driver) RemoveStrays(ctx context.Context, nodeID string, keep map[string]bool) ([]string, error) {
	if nodeID == "" {
		return nil, nil
	}
	list, err := d.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", LabelNode+"="+nodeID))})
	if err != nil {
		return nil, d.engineErr("list containers", err)
	}
	var removed []string
	var errs []error
	for _, c := range list {
		task := c.Labels[LabelTask]
		if c.Labels[LabelNode] != nodeID || task == "" || keep[task] {
			continue
		}
		d.mu.Lock()
		_, live := d.handles[task]
		d.mu.Unlock()
		if live {
			continue
		}
		h := d.newHandle(task, c.ID, "")
		if err := h.Stop(ctx, 0); err != nil {
			errs = append(errs, fmt.Errorf("stray container %s of task %s: %w", short(c.ID), task, err))
			continue
		}
		removed = append(removed, task)
	}
	return removed, errors.Join(errs...)
}

// logSource finds where a task's logs are: its container's id ("" once the
// container is gone) and the directory its logs were saved in.
func (d *Driver) logSource(ctx context.Context, taskID string) (id, logDir string, err error) {
	d.mu.Lock()
	if h := d.handles[taskID]; h != nil && !h.isRemoved() {
		id = h.id
	}
	logDir = d.logDirs[taskID]
	d.mu.Unlock()
	if id == "" {
		if id, err = d.findTask(ctx, taskID); err != nil {
			return "", "", err
		}
	}
	return id, logDir, nil
}

// Logs streams a task's output from the engine; once the container is gone,
// from the copy saved when it was removed. It returns ErrGone when there is
// neither.
func (d *Driver) Logs(ctx context.Context, taskID string, tail int, follow bool) (io.ReadCloser, error) {
	id, logDir, err := d.logSource(ctx, taskID)
	if err != nil {
		return nil, err
	}
	if id == "" {
		if logDir != "" {
			if rc, err := readSaved(logDir, taskID, tail); err == nil {
				return rc, nil
			}
		}
		return nil, fmt.Errorf("docker: no container of task %s: %w", taskID, driver.ErrGone)
	}
	return d.engineLogs(ctx, id, tail, follow)
}

// saveLogs copies the logs of container id to <dir>/<task>.log.
func (d *Driver) saveLogs(ctx context.Context, task, id, dir string) error {
	if dir == "" {
		return nil
	}
	rc, err := d.engineLogs(ctx, id, -1, false)
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(dir, "."+task+".log.tmp")
	if err != nil {
		return fmt.Errorf("docker: save logs of task %s: %w", task, err)
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, rc)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, task+".log"))
	}
	if err != nil {
		return fmt.Errorf("docker: save logs of task %s: %w", task, err)
	}
	return nil
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

var (
	_ driver.Driver       = (*Driver)(nil)
	_ driver.Logger       = (*Driver)(nil)
	_ driver.StrayRemover = (*Driver)(nil)
)

// BridgeGateway returns the host's address on the engine's default "bridge"
// network, where the containers of tasks can reach the host: the agent
// answers DNS there, and task ports are bound there too. It is asked once
// and remembered. See bridgeGateway for where the address comes from.
func (d *Driver) BridgeGateway(ctx context.Context) (netip.Addr, error) {
	d.mu.Lock()
	ip := d.bridge
	d.mu.Unlock()
	if ip.IsValid() {
		return ip, nil
	}
	nw, err := d.cli.NetworkInspect(ctx, string(network()), dnetwork.InspectOptions{})
	if err != nil {
		return netip.Addr{}, d.engineErr("inspect the bridge network", err)
	}
	a, err := bridgeGateway(nw, interfacePrefixes)
	if err != nil {
		return netip.Addr{}, err
	}
	d.mu.Lock()
	d.bridge = a
	d.mu.Unlock()
	return a, nil
}

// bridgeOption names the Linux bridge of a docker bridge network.
const bridgeOption = "com.docker.network.bridge.name"

// bridgeGateway finds the host's IPv4 address on a bridge network. The IPAM
// gateway is the engine's own word for it, but an engine just installed
// and started (Debian's 20.10) reports the default bridge's subnet with no
// gateway: then the address of the bridge interface that lies in the
// subnet is the gateway (the engine puts it there), and failing that the
// subnet's first host, which is where the engine puts it by default.
// addrs lists an interface's addresses; it is a parameter for tests.
func bridgeGateway(nw dnetwork.Inspect, addrs func(name string) ([]netip.Prefix, error)) (netip.Addr, error) {
	var subnets []netip.Prefix
	for _, c := range nw.IPAM.Config {
		if a, err := netip.ParseAddr(c.Gateway); err == nil && a.Unmap().Is4() {
			return a.Unmap(), nil
		}
		if p, err := netip.ParsePrefix(c.Subnet); err == nil && p.Addr().Unmap().Is4() {
			subnets = append(subnets, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked())
		}
	}
	if len(subnets) == 0 {
		return netip.Addr{}, fmt.Errorf("docker: the bridge network %q has neither an IPv4 gateway nor an IPv4 subnet", nw.Name)
	}
	if name := nw.Options[bridgeOption]; name != "" {
		// An interface the engine names but that cannot be read (another
		// network namespace, say) leaves the subnet's first host.
		if ifaddrs, err := addrs(name); err == nil {
			for _, s := range subnets {
				for _, ia := range ifaddrs {
					if a := ia.Addr().Unmap(); a.Is4() && s.Contains(a) {
						return a, nil
					}
				}
			}
		}
	}
	first := subnets[0].Addr().Next()
	if !subnets[0].Contains(first) {
		return netip.Addr{}, fmt.Errorf("docker: the bridge network %q: subnet %s has no host address", nw.Name, subnets[0])
	}
	return first, nil
}

// interfacePrefixes returns the addresses of the host's network interface
// called name.
func interfacePrefixes(name string) ([]netip.Prefix, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	as, err := ifc.Addrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if p, err := netip.ParsePrefix(n.String()); err == nil {
				out = append(out, p)
			}
		}
	}
	return out, nil
}
