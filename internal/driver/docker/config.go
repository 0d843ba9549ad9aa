package docker

import (
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/go-connections/nat"

	"github.com/berth-project/berth/internal/driver"
)

// tmpfsOptions are the mount options of a spec's tmpfs paths: writable by
// any user (the task rarely runs as root), but nothing on them can be
// executed, be set-uid or be a device.
const tmpfsOptions = "rw,nosuid,nodev,noexec,mode=1777"

// containerConfig maps a StartSpec to the engine's container and host
// configuration, hardened as the package doc says. imageUser is the user
// the image declares ("" for root by default). Ports are bound on publishIP
// and, when bridgeIP is set (the host's address on the containers' bridge),
// on it too, so that other containers can reach the task's ports (service
// discovery answers containers with that address). It is a pure function.
func containerConfig(spec driver.StartSpec, imageUser, publishIP, bridgeIP string, logMax int64) (*container.Config, *container.HostConfig, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("docker: task %s: %s: %w", spec.TaskID, fmt.Sprintf(format, args...), driver.ErrInvalid)
	}
	opts := spec.Container
	cfg := &container.Config{
		Image:      spec.Image,
		Env:        spec.Env,
		WorkingDir: spec.Workdir,
		Labels: map[string]string{
			LabelTask:    spec.TaskID,
			LabelService: spec.ServiceName,
			LabelSlot:    strconv.Itoa(spec.Slot),
			LabelNode:    spec.NodeID,
		},
		User: spec.User,
	}
	if spec.Workdir != "" && !path.IsAbs(spec.Workdir) {
		return nil, nil, invalid("workdir %q is not an absolute path", spec.Workdir)
	}
	if len(spec.Command) > 0 {
		if spec.Command[0] == "" {
			return nil, nil, invalid("the program is empty")
		}
		// The command is the whole argv: it replaces ENTRYPOINT and CMD.
		cfg.Entrypoint = []string{spec.Command[0]}
		cfg.Cmd = append([]string{}, spec.Command[1:]...)
	}
	if cfg.User == "" && isRoot(imageUser) && !opts.RunAsRoot {
		cfg.User = NobodyUser
	}

	init := true
	hc := &container.HostConfig{
		ReadonlyRootfs: !opts.WritableRootfs,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		Privileged:     false,
		IpcMode:        container.IPCModePrivate,
		NetworkMode:    network(),
		Init:           &init,
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
		LogConfig: container.LogConfig{Type: "json-file", Config: map[string]string{
			// Two files of half the cap each, as the process driver keeps.
			"max-size": strconv.FormatInt(max(logMax/2, 4096), 10),
			"max-file": "2",
		}},
		Resources: container.Resources{
			NanoCPUs:   int64(spec.CPUs * 1e9),
			Memory:     spec.MemoryBytes,
			CpusetCpus: spec.CPUSet,
			CpusetMems: spec.MemNodes,
		},
	}
	if spec.MemoryBytes > 0 {
		hc.MemorySwap = spec.MemoryBytes // no swap beyond the limit
	}
	// DNS: the node agent's resolver for service discovery, when it gives
	// one. The engine writes it into the container's /etc/resolv.conf.
	for _, s := range spec.DNS.Servers {
		if _, err := netip.ParseAddr(s); err != nil {
			return nil, nil, invalid("dns server %q is not an IP address", s)
		}
	}
	hc.DNS = spec.DNS.Servers
	hc.DNSSearch = spec.DNS.Search
	for _, c := range opts.CapAdd {
		name := strings.TrimPrefix(strings.ToUpper(c), "CAP_")
		if name == "" || name == "ALL" {
			return nil, nil, invalid("cap_add %q: name each capability", c)
		}
		hc.CapAdd = append(hc.CapAdd, "CAP_"+name)
	}
	if len(opts.Tmpfs) > 0 {
		hc.Tmpfs = map[string]string{}
	}
	for _, p := range opts.Tmpfs {
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return nil, nil, invalid("tmpfs %q is not a clean absolute path below /", p)
		}
		hc.Tmpfs[p] = tmpfsOptions
	}
	for _, m := range opts.Mounts {
		if !path.IsAbs(m.Source) || !path.IsAbs(m.Target) {
			return nil, nil, invalid("mount %s:%s: paths must be absolute", m.Source, m.Target)
		}
		hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeBind, Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	for _, p := range spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = "tcp"
		}
		if proto != "tcp" && proto != "udp" {
			return nil, nil, invalid("port %s: unknown protocol %q", p.Name, proto)
		}
		if p.HostPort < 1 || p.HostPort > 65535 {
			return nil, nil, invalid("port %s: host port %d is out of range", p.Name, p.HostPort)
		}
		// Container port = host port, so PORT_* is right on both sides. A
		// port published in host mode arrives with its published number
		// as the host port (the scheduler gives it exactly that), so it is
		// bound here like any other, on the same address: no gateway stands
		// in between.
		port := nat.Port(strconv.Itoa(p.HostPort) + "/" + proto)
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts = nat.PortSet{}
			hc.PortBindings = nat.PortMap{}
		}
		cfg.ExposedPorts[port] = struct{}{}
		hc.PortBindings[port] = []nat.PortBinding{{HostIP: publishIP, HostPort: strconv.Itoa(p.HostPort)}}
		if bridgeIP != "" && bridgeIP != publishIP && publishIP != "0.0.0.0" {
			hc.PortBindings[port] = append(hc.PortBindings[port], nat.PortBinding{HostIP: bridgeIP, HostPort: strconv.Itoa(p.HostPort)})
		}
	}
	return cfg, hc, nil
}

// network is the network mode of every container: the engine's default
// bridge, never the host's network namespace.
func network() container.NetworkMode { return "bridge" }

// isRoot reports whether an image user (name, uid, name:group, uid:gid, or
// "" for the default) is root.
func isRoot(user string) bool {
	u, _, _ := strings.Cut(user, ":")
	return u == "" || u == "root" || u == "0"
}
