package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
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
	}
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
