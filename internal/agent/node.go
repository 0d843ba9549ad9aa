package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
)

// registration describes this node to the manager.
func (a *Agent) registration(ls *logServer, nodeID string) api.NodeRegistration {
	drivers := a.availableDrivers()
	res := nodeResources(a.log)
	if n, ok := a.nodeCPUs(); ok {
		res.CPUs = n
	}
	var reserved string
	if a.cpus.topo != nil {
		reserved = a.cpus.reserved.String()
	}
	return api.NodeRegistration{
		NodeID:          nodeID,
		Hostname:        a.cfg.Hostname,
		Address:         a.cfg.Address,
		Labels:          a.cfg.Labels,
		Topology:        a.cpus.topo,
		ReservedCPUs:    reserved,
		Resources:       res,
		Drivers:         drivers,
		PortRange:       a.cfg.PortRange,
		AgentURL:        ls.url,
		AgentCertSHA256: ls.fingerprint,
		AgentSecret:     ls.secret,
		ReservedPorts:   a.reservedPorts(ls),
	}
}

// reservedPorts lists the ports the agent itself listens on, which no
// service may publish (the gateway could not open them): the mesh's
// entrypoints, its DNS servers and its log server. Port 0 (a port the
// kernel picks) is left out.
func (a *Agent) reservedPorts(ls *logServer) []api.ReservedPort {
	var out []api.ReservedPort
	add := func(hostport, use string, protos ...string) {
		_, p, err := net.SplitHostPort(hostport)
		if err != nil {
			return
		}
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return
		}
		for _, proto := range protos {
			out = append(out, api.ReservedPort{Port: n, Protocol: proto, Use: use})
		}
	}
	if m := a.cfg.Mesh; m != nil {
		add(m.HTTPAddr, "the gateway's HTTP entrypoint (--mesh-http)", "tcp")
		add(m.HTTPSAddr, "the gateway's HTTPS entrypoint (--mesh-https)", "tcp")
	}
	if d := a.cfg.DNS; d != nil {
		add(d.Addr, "the agent's DNS (--dns)", "tcp", "udp")
		add(d.TaskAddr, "the agent's DNS for tasks (--task-dns)", "tcp", "udp")
	}
	if ls != nil {
		if u, err := url.Parse(ls.url); err == nil {
			add(u.Host, "the agent's log server (--log-listen)", "tcp")
		}
	}
	return out
}

// register announces the node, retrying with back-off until the manager
// answers or ctx ends, and keeps the id it is given.
func (a *Agent) register(ctx context.Context, ls *logServer) error {
	bo := newBackoff(a.retryMin, 5*time.Second)
	for {
		saved, err := a.store.readNodeID()
		if err != nil {
			a.log.Error("cannot read the saved node id; registering as a new node", "err", err)
		}
		node, err := a.m.Register(ctx, a.registration(ls, saved))
		if err == nil && node.ID == "" {
			err = errors.New("the manager returned no node id")
		}
		if err == nil {
			if node.ID != saved {
				if saved != "" {
					a.log.Warn("the manager gave this node a new id", "old", saved, "new", node.ID)
				}
				if err := a.store.writeNodeID(node.ID); err != nil {
					a.log.Error("cannot save the node id", "err", err)
				}
			}
			a.nodeID.Store(node.ID)
			a.regLimiter.ok()
			a.log.Info("registered", "node", node.ID)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.regLimiter.log(a.log, "registration failed; retrying", err)
		if !sleepCtx(ctx, bo.next()) {
			return ctx.Err()
		}
	}
}

// nodeResources is the node's capacity: the CPUs this process may run on
// (runtime.NumCPU counts the affinity mask) and the memory in /proc/meminfo.
func nodeResources(log interface{ Warn(string, ...any) }) api.NodeResources {
	res := api.NodeResources{CPUs: float64(runtime.NumCPU())}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		log.Warn("cannot read memory size", "err", err)
		return res
	}
	defer f.Close()
	mem, err := parseMemTotal(f)
	if err != nil {
		log.Warn("cannot read memory size", "err", err)
		return res
	}
	res.Memory = api.ByteSize(mem)
	return res
}

// parseMemTotal returns MemTotal from /proc/meminfo content, in bytes.
func parseMemTotal(r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("agent: bad MemTotal %q", rest)
		}
		mult := int64(1)
		if len(f) > 1 && strings.EqualFold(f[1], "kB") {
			mult = 1024
		}
		return n * mult, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("agent: read meminfo: %w", err)
	}
	return 0, errors.New("agent: no MemTotal in meminfo")
}

// DetectAddress returns the address this machine reaches the manager at
// managerURL from: the source address of its route there, as Swarm picks a
// node's address. No packet is sent (a UDP socket only asks the kernel for a
// route). It is what a node registers when --address is not given: other
// nodes reach it where the manager does. A manager on this machine gives a
// loopback address, which is fine on one machine only (the API then flags
// the node in a cluster that spans machines).
func DetectAddress(managerURL string) (string, error) {
	u, err := url.Parse(managerURL)
	if err != nil || u.Hostname() == "" {
		return "", fmt.Errorf("agent: detect address: %q is not a manager URL", managerURL)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	c, err := net.Dial("udp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return "", fmt.Errorf("agent: detect address: no route to %s: %w", u.Host, err)
	}
	defer c.Close()
	la, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok || la.IP == nil || la.IP.IsUnspecified() {
		return "", fmt.Errorf("agent: detect address: no source address for %s", u.Host)
	}
	return la.IP.String(), nil
}

// probeHost is the host the agent's health checks dial a task's port at:
// the node's address, where other nodes' gateways dial it, so that a task
// they cannot reach (one listening on loopback only) does not count as
// healthy; 127.0.0.1 when the node has no usable address (one machine).
func (a *Agent) probeHost() string {
	if h, ok := api.MeshHost(api.Node{Address: a.cfg.Address}, false); ok {
		return h
	}
	return "127.0.0.1"
}
