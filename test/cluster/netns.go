// Package cluster is the multi-host test harness of Berth and its
// acceptance tests: every Berth process (a manager or an agent) runs in its
// own Linux network namespace with its own address, and the namespaces are
// joined by a bridge, as separate machines on one switch would be.
//
// The harness makes a hub namespace that holds the bridge, one namespace per
// host with a veth pair into the bridge, and a veth from the test's own
// namespace into the bridge so that the test (and its API client) reaches
// every host. Hosts run their process with `nsenter --net=/run/netns/NS`
// rather than `ip netns exec`: the latter remounts /sys, which hides the
// cgroup hierarchies that Berth's process driver needs.
//
// The package is test support only: nothing in Berth may import it. It must
// only ever signal processes it started (through exec.Cmd, which holds a
// pidfd) or recorded by pid and start time, and it removes everything it made
// (processes, namespaces, links, cgroups, temporary directories) in the
// test's cleanup, even when the test fails. It needs root, iproute2 and
// nsenter (util-linux); Available says why it cannot run.
package cluster

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/internal/testutil"
)

// ErrUnavailable is returned by Available when this machine cannot run
// the harness.
var ErrUnavailable = errors.New("cluster: harness unavailable")

// Available reports whether the harness can run here: as root, with the ip
// (iproute2) and nsenter (util-linux) commands.
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: network namespaces, veth pairs and cgroups need root", ErrUnavailable)
	}
	for _, c := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%w: the %s command is missing (install iproute2 and util-linux): %v", ErrUnavailable, c, err)
		}
	}
	return nil
}

// RequireAvailable skips t when Available fails, with its reason, and under
// go test -short: the harness is the network namespace tier, which the
// short inner loop leaves out.
func RequireAvailable(t testing.TB) {
	t.Helper()
	testutil.SkipIfShort(t, "network namespace")
	if err := Available(); err != nil {
		t.Skip(err.Error())
	}
}

// Network is a bridge with hosts on it, each in its own network namespace,
// on a /24 picked at random in 10.0.0.0/8 that no route of this machine
// covers. The test's own namespace has the first address of the /24.
type Network struct {
	t testing.TB
	// ID is the random name part shared by everything this network made.
	ID string
	// Prefix is the /24's first three octets, such as "10.23.7".
	Prefix string
	// HostIP is the test namespace's address on the bridge.
	HostIP string

	hub    string // namespace holding the bridge
	bridge string // bridge name inside hub
	hostIf string // veth end in the test's namespace

	mu    sync.Mutex
	hosts []*Host
}

// Host is one network namespace on a Network: a machine with one address.
type Host struct {
	net *Network
	// Name is the namespace's name (unique per test run); it doubles as the
	// host name given to Berth.
	Name string
	// IP is the host's address.
	IP string
	// hubIf is the veth end in the hub namespace: setting it down cuts the
	// host off like pulling its cable.
	hubIf string
}

var (
	subnetsMu sync.Mutex
	subnets   = map[string]bool{} // /24 prefixes taken by this process
)

// NewNetwork makes a bridge and n hosts. Everything is removed when t ends.
func NewNetwork(t testing.TB, n int) *Network {
	t.Helper()
	RequireAvailable(t)
	nw := &Network{t: t, ID: randomHex(3)}
	nw.hub = "berth-t-" + nw.ID + "-hub"
	nw.bridge = "br0"
	nw.hostIf = "bth" + nw.ID // 9 characters, under IFNAMSIZ
	t.Cleanup(nw.cleanup)

	prefix, err := pickSubnet()
	if err != nil {
		t.Fatal(err)
	}
	nw.Prefix = prefix
	nw.HostIP = prefix + ".1"

	nw.mustIP("netns", "add", nw.hub)
	nw.mustIn(nw.hub, "ip", "link", "set", "lo", "up")
	nw.mustIn(nw.hub, "ip", "link", "add", nw.bridge, "type", "bridge")
	nw.mustIn(nw.hub, "ip", "link", "set", nw.bridge, "up")
	// The test's own leg: a veth whose peer is moved into the hub.
	nw.mustIP("link", "add", nw.hostIf, "type", "veth", "peer", "name", "bthp"+nw.ID)
	nw.mustIP("link", "set", "bthp"+nw.ID, "netns", nw.hub)
	nw.mustIn(nw.hub, "ip", "link", "set", "bthp"+nw.ID, "name", "up0", "master", nw.bridge, "up")
	nw.mustIP("addr", "add", nw.HostIP+"/24", "dev", nw.hostIf)
	nw.mustIP("link", "set", nw.hostIf, "up")
	for i := 0; i < n; i++ {
		nw.AddHost()
	}
	return nw
}

// AddHost adds one more host to the network and returns it.
func (nw *Network) AddHost() *Host {
	t := nw.t
	t.Helper()
	nw.mu.Lock()
	i := len(nw.hosts) + 1
	h := &Host{net: nw, Name: fmt.Sprintf("berth-t-%s-n%d", nw.ID, i), IP: fmt.Sprintf("%s.%d", nw.Prefix, 10+i),
		hubIf: fmt.Sprintf("n%d", i)}
	nw.hosts = append(nw.hosts, h)
	nw.mu.Unlock()

	nw.mustIP("netns", "add", h.Name)
	nw.mustIn(h.Name, "ip", "link", "set", "lo", "up")
	// Both ends are made inside the host's namespace (no name can collide
	// with another test's), then one end moves into the hub.
	nw.mustIn(h.Name, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", h.hubIf)
	nw.mustIn(h.Name, "ip", "link", "set", h.hubIf, "netns", nw.hub)
	nw.mustIn(nw.hub, "ip", "link", "set", h.hubIf, "master", nw.bridge, "up")
	nw.mustIn(h.Name, "ip", "addr", "add", h.IP+"/24", "dev", "eth0")
	nw.mustIn(h.Name, "ip", "link", "set", "eth0", "up")
	return h
}

// Hosts returns the network's hosts in the order they were added.
func (nw *Network) Hosts() []*Host {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return append([]*Host(nil), nw.hosts...)
}

// Cut takes the host off the network: its link on the bridge goes down,
// so packets to and from it are lost, as when a cable is pulled. Its own
// interface stays up, so its processes see timeouts, not errors.
func (h *Host) Cut() {
	h.net.t.Helper()
	h.net.mustIn(h.net.hub, "ip", "link", "set", h.hubIf, "down")
}

// Heal undoes Cut.
func (h *Host) Heal() {
	h.net.t.Helper()
	h.net.mustIn(h.net.hub, "ip", "link", "set", h.hubIf, "up")
}

// Command returns a command that runs name with args inside the host's
// network namespace (only the network: the mount, pid and cgroup
// namespaces are the test's). nsenter execs name in place, so the started
// process's pid is name's.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + h.Name, "--", name}, args...)...)
}

// cleanup removes the namespaces (their veths go with them) and the test's
// veth. Processes were stopped before: their cleanups were registered later
// and run first.
func (nw *Network) cleanup() {
	var errs []string
	for _, h := range nw.Hosts() {
		if out, err := run("ip", "netns", "del", h.Name); err != nil && !strings.Contains(out, "No such file") {
			errs = append(errs, fmt.Sprintf("ip netns del %s: %v: %s", h.Name, err, out))
		}
	}
	if out, err := run("ip", "link", "del", nw.hostIf); err != nil && !strings.Contains(out, "Cannot find device") {
		errs = append(errs, fmt.Sprintf("ip link del %s: %v: %s", nw.hostIf, err, out))
	}
	if out, err := run("ip", "netns", "del", nw.hub); err != nil && !strings.Contains(out, "No such file") {
		errs = append(errs, fmt.Sprintf("ip netns del %s: %v: %s", nw.hub, err, out))
	}
	if nw.Prefix != "" {
		subnetsMu.Lock()
		delete(subnets, nw.Prefix)
		subnetsMu.Unlock()
	}
	if len(errs) > 0 {
		nw.t.Errorf("cluster cleanup: %s", strings.Join(errs, "; "))
	}
}

func (nw *Network) mustIP(args ...string) {
	nw.t.Helper()
	if out, err := run("ip", args...); err != nil {
		nw.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// mustIn runs a command inside namespace ns.
func (nw *Network) mustIn(ns string, name string, args ...string) {
	nw.t.Helper()
	full := append([]string{"--net=/run/netns/" + ns, "--", name}, args...)
	if out, err := run("nsenter", full...); err != nil {
		nw.t.Fatalf("in %s: %s %s: %v: %s", ns, name, strings.Join(args, " "), err, out)
	}
}

// run runs a short command and returns its combined output.
func run(name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return strings.TrimSpace(out.String()), err
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return strings.TrimSpace(out.String()), fmt.Errorf("%s did not finish in 30s", name)
	}
}

// pickSubnet returns the first three octets of a random /24 in 10.0.0.0/8
// that no address or route of this machine (any table) overlaps and that
// this process has not taken.
func pickSubnet() (string, error) {
	out, err := run("ip", "-j", "-4", "route", "show", "table", "all")
	if err != nil {
		return "", fmt.Errorf("cluster: listing routes: %v: %s", err, out)
	}
	var routes []struct {
		Dst string `json:"dst"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		return "", fmt.Errorf("cluster: ip -j route: %w", err)
	}
	var used []*net.IPNet
	for _, r := range routes {
		if r.Dst == "" || r.Dst == "default" {
			continue
		}
		dst := r.Dst
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if _, n, err := net.ParseCIDR(dst); err == nil {
			used = append(used, n)
		}
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				used = append(used, n)
			}
		}
	}
	subnetsMu.Lock()
	defer subnetsMu.Unlock()
	for try := 0; try < 100; try++ {
		a, err1 := rand.Int(rand.Reader, big.NewInt(254))
		b, err2 := rand.Int(rand.Reader, big.NewInt(256))
		if err1 != nil || err2 != nil {
			return "", errors.New("cluster: no randomness")
		}
		prefix := fmt.Sprintf("10.%d.%d", a.Int64()+1, b.Int64())
		_, mine, _ := net.ParseCIDR(prefix + ".0/24")
		if subnets[prefix] || overlaps(mine, used) {
			continue
		}
		subnets[prefix] = true
		return prefix, nil
	}
	return "", errors.New("cluster: found no free /24 in 10.0.0.0/8 in 100 tries")
}

func overlaps(n *net.IPNet, used []*net.IPNet) bool {
	for _, u := range used {
		if u.Contains(n.IP) || n.Contains(u.IP) {
			return true
		}
	}
	return false
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// InNetns runs fn on a thread that has entered host h's network namespace.
// Sockets fn opens belong to that namespace and may be used from anywhere
// afterwards. The thread is discarded when fn returns, never reused.
func (h *Host) InNetns(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// No UnlockOSThread: the goroutine ends locked, so the runtime
		// ends the thread instead of reusing it in the wrong namespace.
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + h.Name)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", h.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
