package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/topology"
)

// errInvalidTask marks a task the node cannot run as given.
var errInvalidTask = errors.New("invalid task")

// normalizeTask fills in the spec defaults of a copy of t and checks it: the
// task spec must validate, every named port must have a host port, and a
// CPU allocation must be a non-empty CPU list.
func normalizeTask(t api.Task) (api.Task, error) {
	t = copyTask(t)
	s := api.ServiceSpec{Name: t.ServiceName, Task: t.Spec}
	if t.Unit != "" {
		// A per-unit task's exclusive CPUs are its unit's: it may name no
		// count.
		s.Mode = api.ModePerUnit
		s.Unit, _, _ = strings.Cut(t.Unit, ":")
	}
	s.Normalize()
	if err := s.Validate(); err != nil {
		return t, fmt.Errorf("%w: %w", errInvalidTask, err)
	}
	t.Spec = s.Task
	for _, p := range t.Spec.Ports {
		hp, ok := t.Ports[p.Name]
		if !ok || hp < 1 || hp > 65535 {
			return t, fmt.Errorf("%w: port %q has no host port allocated", errInvalidTask, p.Name)
		}
	}
	if a := t.Allocation; a != nil {
		if cpus, err := topology.Parse(a.CPUs); err != nil || cpus.IsEmpty() {
			return t, fmt.Errorf("%w: CPU allocation %q is not a CPU list", errInvalidTask, a.CPUs)
		}
		if _, err := topology.Parse(a.MemNodes); err != nil {
			return t, fmt.Errorf("%w: memory nodes %q are not a list", errInvalidTask, a.MemNodes)
		}
	} else if t.Unit != "" || t.Spec.Resources.Exclusive() {
		return t, fmt.Errorf("%w: the task needs a CPU allocation (per-unit or exclusive) but was given none", errInvalidTask)
	}
	return t, nil
}

// taskEnv builds a task's environment from scratch — the agent's own
// environment may hold secrets and is never inherited. PATH and HOME come
// first and the spec's env may override them; the BERTH_* and PORT*
// variables come last and cannot be overridden.
func taskEnv(t api.Task, nodeID string) map[string]string {
	env := map[string]string{}
	if t.Spec.Driver != api.DriverDocker {
		// A container's PATH and HOME are its image's, not this host's.
		env["PATH"] = TaskPATH
		env["HOME"] = homeOf(t.Spec.User)
	}
	for k, v := range t.Spec.Env {
		env[k] = v
	}
	env["BERTH_TASK_ID"] = t.ID
	env["BERTH_SERVICE"] = t.ServiceName
	env["BERTH_SLOT"] = strconv.Itoa(t.Slot)
	env["BERTH_NODE_ID"] = nodeID
	env["BERTH_TASK_NAME"] = taskName(t)
	for i, p := range t.Spec.Ports {
		hp := strconv.Itoa(t.Ports[p.Name])
		env[api.PortEnv(p.Name)] = hp
		if i == 0 {
			env["PORT"] = hp
		}
	}
	return env
}

// taskName is <service>.<slot>.<first 8 characters of the id>.
func taskName(t api.Task) string {
	short := t.ID
	if len(short) > 8 {
		short = short[:8]
	}
	return fmt.Sprintf("%s.%d.%s", t.ServiceName, t.Slot, short)
}

// envList turns env into sorted KEY=VALUE pairs.
func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// homeOf returns the home directory of a spec's user ("name", "uid",
// "name:group", "uid:gid"), or "/" when there is none or it is unknown.
func homeOf(spec string) string {
	if spec == "" {
		return "/"
	}
	u, err := lookupUser(spec)
	if err != nil || u.HomeDir == "" {
		return "/"
	}
	return u.HomeDir
}

func lookupUser(spec string) (*user.User, error) {
	name, _, _ := strings.Cut(spec, ":")
	if _, err := strconv.Atoi(name); err == nil {
		return user.LookupId(name)
	}
	return user.Lookup(name)
}

// expandCommand expands ${VAR} in every argument with env and resolves the
// program: "berth" is this Berth binary, a bare name is looked up in the
// task's PATH (not the agent's), a relative path is relative to workdir.
func expandCommand(cmd []string, env map[string]string, workdir, berth string) ([]string, error) {
	out := make([]string, len(cmd))
	for i, a := range cmd {
		out[i] = api.ExpandVars(a, env)
	}
	if len(out) == 0 {
		return out, nil
	}
	p, err := resolveProgram(out[0], env["PATH"], workdir, berth)
	if err != nil {
		return nil, err
	}
	out[0] = p
	return out, nil
}

func resolveProgram(name, pathEnv, workdir, berth string) (string, error) {
	switch {
	case name == "berth":
		return berth, nil
	case filepath.IsAbs(name):
		return name, nil
	case strings.Contains(name, "/"):
		if workdir == "" {
			workdir = "/"
		}
		return filepath.Join(workdir, name), nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if !filepath.IsAbs(dir) {
			continue // a relative PATH entry would depend on the agent's cwd
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: program %q not found in PATH %s", errInvalidTask, name, pathEnv)
}

// buildStartSpec turns a normalized task into what its driver needs, pinned
// to cpus and mems (empty: unpinned). It also returns the task's
// environment, which exec health checks use; a pinned task gets GOMAXPROCS
// set to its number of CPUs unless its spec sets it.
func buildStartSpec(t api.Task, nodeID, berth, logDir string, logMax int64, cpus, mems string) (driver.StartSpec, map[string]string, error) {
	env := taskEnv(t, nodeID)
	gomaxprocs(env, t.Spec, cpus)
	spec := driver.StartSpec{
		CPUSet:      cpus,
		MemNodes:    mems,
		TaskID:      t.ID,
		ServiceName: t.ServiceName,
		Slot:        t.Slot,
		Image:       t.Spec.Image,
		Env:         envList(env),
		User:        t.Spec.User,
		Workdir:     t.Spec.Workdir,
		CPUs:        t.Spec.Resources.CPUs,
		MemoryBytes: int64(t.Spec.Resources.Memory),
		LogDir:      logDir,
		LogMaxBytes: logMax,
		NodeID:      nodeID,
	}
	for _, p := range t.Spec.Ports {
		spec.Ports = append(spec.Ports, driver.Port{Name: p.Name, Protocol: p.Protocol, HostPort: t.Ports[p.Name]})
	}
	if t.Spec.Driver == api.DriverDocker {
		spec.Container = driver.ContainerOptions{
			Pull:           t.Spec.Pull,
			WritableRootfs: t.Spec.ReadOnly != nil && !*t.Spec.ReadOnly,
			Tmpfs:          t.Spec.Tmpfs,
			CapAdd:         t.Spec.CapAdd,
			RunAsRoot:      t.Spec.RunAsRoot,
		}
	}
	if t.Spec.Image != "" {
		// A container's command runs inside its image: nothing to resolve.
		spec.Command = make([]string, len(t.Spec.Command))
		for i, a := range t.Spec.Command {
			spec.Command[i] = api.ExpandVars(a, env)
		}
		return spec, env, nil
	}
	cmd, err := expandCommand(t.Spec.Command, env, t.Spec.Workdir, berth)
	if err != nil {
		return spec, env, err
	}
	spec.Command = cmd
	return spec, env, nil
}

// checkPorts checks that every host port allocated to t can be bound here.
func checkPorts(t api.Task, free func(proto string, port int) error) error {
	for _, p := range t.Spec.Ports {
		port := t.Ports[p.Name]
		proto := p.Protocol
		if proto == "" {
			proto = "tcp"
		}
		if err := free(proto, port); err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("port %d (%s) is in use on this node", port, p.Name)
			}
			return fmt.Errorf("port %d (%s) cannot be bound on this node: %w", port, p.Name, err)
		}
	}
	return nil
}

// portFree binds port on every address (tcp or udp) and lets it go again.
func portFree(proto string, port int) error {
	addr := ":" + strconv.Itoa(port)
	switch proto {
	case "udp":
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	default:
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		return l.Close()
	}
}

// setDNSEnv tells a task where the node's DNS server is: BERTH_DNS=addr
// (host:port) in its environment. Like every BERTH_* variable it replaces
// one the spec sets.
func setDNSEnv(spec *driver.StartSpec, addr string) {
	env := spec.Env[:0:0]
	for _, kv := range spec.Env {
		if !strings.HasPrefix(kv, "BERTH_DNS=") {
			env = append(env, kv)
		}
	}
	env = append(env, "BERTH_DNS="+addr)
	sort.Strings(env)
	spec.Env = env
}
