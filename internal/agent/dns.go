package agent

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/gateway/dns"
)

// Service discovery: every agent answers DNS for <service>.berth from the
// endpoints stream (docs/adr/0018-service-discovery-dns.md). It answers on
// two addresses, each with the records its askers can connect to:
//
//   - the host address (DNSConfig.Addr, 127.0.0.1:7453 by default), for the
//     host and process tasks: a task's address is its node's address;
//   - the container bridge's gateway, port 53, for container tasks, which
//     get it as their resolver: a task on this node is answered with the
//     gateway address (the container reaches the host there, not at
//     127.0.0.1), a task elsewhere with its node's address.

// Defaults and special values of DNSConfig.
const (
	// DefaultDNSAddr is where the agent answers DNS unless DNSConfig.Addr
	// says otherwise: loopback, a port of its own (53 is usually taken).
	DefaultDNSAddr = "127.0.0.1:7453"
	// DefaultTaskDNSAddr is where process tasks' own resolv.conf points
	// unless DNSConfig.TaskAddr says otherwise: a loopback address of its
	// own, on port 53 (a resolv.conf cannot name another port).
	DefaultTaskDNSAddr = "127.0.0.153:53"
	// DNSOff, as DNSConfig.Addr, turns DNS off; as Upstream, refuses names
	// outside the zone; as BridgeAddr, gives containers no Berth resolver.
	DNSOff = "off"
	// DNSDomain is the zone the agent answers for: <service>.berth.
	DNSDomain = "berth"
	// DefaultResolvConf is where the default upstream is read from.
	DefaultResolvConf = "/etc/resolv.conf"
	// dockerBridge is the interface of Docker's default bridge network.
	dockerBridge = "docker0"
)

// DNSConfig turns on the node's DNS server for service discovery.
type DNSConfig struct {
	// Addr is host:port the host and process tasks ask (default
	// DefaultDNSAddr; DNSOff turns DNS off). Process tasks get it as
	// BERTH_DNS.
	Addr string
	// TaskAddr is IP:53 where the agent also answers for process tasks,
	// whose /etc/resolv.conf names it (with the search domain "berth") when
	// the process driver can give a task its own (as root:
	// process.Config.TaskResolvers). Default DefaultTaskDNSAddr; DNSOff: process
	// tasks keep the host's resolver. An address that cannot be bound is
	// logged, and process tasks then keep the host's resolver too.
	TaskAddr string
	// Upstream is host:port of the resolver that names outside the zone
	// are forwarded to. Default: the first nameserver of ResolvConf that is
	// not this agent, or none; DNSOff refuses such names.
	Upstream string
	// BridgeAddr is the host's address on the network of container tasks,
	// where the agent also answers on port 53 and which containers get as
	// their resolver. Default: the gateway of the engine's "bridge" network
	// when a driver can tell it (BridgeGatewayer), else the address of the
	// docker0 interface when a docker driver is configured; DNSOff: none.
	BridgeAddr string
	// ResolvConf is the file the default Upstream is read from (default
	// DefaultResolvConf).
	ResolvConf string
}

// BridgeGatewayer is an optional extra of a container driver: the host's
// address on the network its containers are attached to (for Docker, the
// gateway of the "bridge" network, from the engine's network inspect).
type BridgeGatewayer interface {
	BridgeGateway(ctx context.Context) (netip.Addr, error)
}

// nodeDNS is the agent's DNS server: one per listening address, each with
// the records its askers can reach.
type nodeDNS struct {
	host     *dns.Server
	hostAddr string // what process tasks are told (BERTH_DNS)
	bridge   *dns.Server
	bridgeIP netip.Addr
	taskIP   netip.Addr // where host also answers, for process tasks' resolv.conf; invalid: nowhere

	mu     sync.Mutex
	warned map[string]bool // node addresses that are not IPs, logged once
}

// startDNS opens the node's DNS server if the agent has a DNSConfig. A
// host address that cannot be bound is an error; a bridge address that
// cannot be is logged, and container tasks then keep the engine's default
// resolver.
func (a *Agent) startDNS() error { return a.startDNSOn(53) }

// startDNSOn is startDNS with the bridge listener on bridgePort (tests use
// 0).
func (a *Agent) startDNSOn(bridgePort int) error {
	dc := a.cfg.DNS
	if dc == nil || dc.Addr == DNSOff {
		return nil
	}
	addr := dc.Addr
	if addr == "" {
		addr = DefaultDNSAddr
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%w: dns address %q: %w", ErrConfig, addr, err)
	}
	bridgeIP, err := a.bridgeAddr(dc.BridgeAddr)
	if err != nil {
		return err
	}
	taskIP, err := taskDNSAddr(dc.TaskAddr)
	if err != nil {
		return err
	}
	upstream := dc.Upstream
	switch upstream {
	case DNSOff:
		upstream = ""
	case "":
		rc := dc.ResolvConf
		if rc == "" {
			rc = DefaultResolvConf
		}
		upstream = resolvConfUpstream(rc, addr, bridgeIP)
	default:
		if _, _, err := net.SplitHostPort(upstream); err != nil {
			return fmt.Errorf("%w: dns upstream %q: %w", ErrConfig, upstream, err)
		}
	}
	log := a.log.WithGroup("dns")
	opts := dns.Options{Domain: DNSDomain + ".", Upstream: upstream, Logger: a.log}
	host, err := dns.New(opts)
	if err != nil {
		return fmt.Errorf("agent: dns: %w", err)
	}
	if err := host.Listen(addr); err != nil {
		return fmt.Errorf("agent: dns on %s: %w", addr, err)
	}
	d := &nodeDNS{host: host, hostAddr: dialable(host.Addr()), warned: map[string]bool{}}
	if bridgeIP.IsValid() {
		b, err := dns.New(opts)
		if err == nil {
			err = b.Listen(net.JoinHostPort(bridgeIP.String(), strconv.Itoa(bridgePort)))
		}
		if err != nil {
			log.Warn("cannot answer DNS on the container bridge; container tasks keep the engine's resolver", "addr", bridgeIP, "err", err)
		} else {
			d.bridge, d.bridgeIP = b, bridgeIP
		}
	}
	if taskIP.IsValid() {
		// The same records as the host address: process tasks are on
		// the host's network.
		if err := host.Listen(net.JoinHostPort(taskIP.String(), "53")); err != nil {
			log.Warn("cannot answer DNS for process tasks; they keep the host's resolver", "addr", taskIP, "err", err)
		} else {
			d.taskIP = taskIP
		}
	}
	log.Info("answering DNS", "addr", d.hostAddr, "bridge", d.bridgeAddr(), "tasks", d.taskAddr(), "upstream", upstream)
	a.dns.Store(d)
	return nil
}

// bridgeAddr resolves DNSConfig.BridgeAddr: an IP, DNSOff, or "" to
// discover it. It returns the zero Addr for none.
func (a *Agent) bridgeAddr(conf string) (netip.Addr, error) {
	switch conf {
	case DNSOff:
		return netip.Addr{}, nil
	case "":
	default:
		ip, err := netip.ParseAddr(conf)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%w: dns bridge address %q is not an IP address", ErrConfig, conf)
		}
		return ip, nil
	}
	names := make([]string, 0, len(a.cfg.Drivers))
	for name := range a.cfg.Drivers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		bg, ok := a.cfg.Drivers[name].(BridgeGatewayer)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ip, err := bg.BridgeGateway(ctx)
		cancel()
		if err == nil && ip.IsValid() {
			return ip.Unmap(), nil
		}
		a.log.Warn("the driver cannot tell its bridge gateway", "driver", name, "err", err)
	}
	if _, ok := a.cfg.Drivers[api.DriverDocker]; !ok {
		return netip.Addr{}, nil // no containers to serve
	}
	ip, err := interfaceIPv4(dockerBridge)
	if err != nil {
		a.log.Warn("no container bridge found; container tasks keep the engine's resolver", "interface", dockerBridge, "err", err)
		return netip.Addr{}, nil
	}
	return ip, nil
}

// interfaceIPv4 returns the first IPv4 address of the named interface.
func interfaceIPv4(name string) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, err
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address", name)
}

// resolvConfUpstream returns host:53 of the first nameserver in the file at
// path that is not this agent (listening on self or on bridge), or "".
func resolvConfUpstream(path, self string, bridge netip.Addr) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	selfHost, selfPort, _ := net.SplitHostPort(self)
	selfIP, _ := netip.ParseAddr(selfHost)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		ip, err := netip.ParseAddr(fields[1])
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		if ip == bridge || (selfPort == "53" && (ip.WithZone("") == selfIP.WithZone("") || selfIP.IsUnspecified())) {
			continue // that is us
		}
		return net.JoinHostPort(ip.String(), "53")
	}
	return ""
}

// dialable turns a listening address into one a client on this host can
// dial: an unspecified host becomes loopback.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	ip, err := netip.ParseAddr(host)
	if err == nil && ip.IsUnspecified() {
		if ip.Is4() {
			host = "127.0.0.1"
		} else {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// taskDNSAddr resolves DNSConfig.TaskAddr: IP:53, DNSOff, or "" for the
// default. It returns the zero Addr for none.
func taskDNSAddr(conf string) (netip.Addr, error) {
	switch conf {
	case DNSOff:
		return netip.Addr{}, nil
	case "":
		conf = DefaultTaskDNSAddr
	}
	ap, err := netip.ParseAddrPort(conf)
	if err != nil || ap.Port() != 53 {
		return netip.Addr{}, fmt.Errorf("%w: task dns address %q: want IP:53 (a resolv.conf cannot name another port)", ErrConfig, conf)
	}
	return ap.Addr().Unmap(), nil
}

func (d *nodeDNS) taskAddr() string {
	if !d.taskIP.IsValid() {
		return ""
	}
	return d.taskIP.String()
}

func (d *nodeDNS) bridgeAddr() string {
	if d.bridge == nil {
		return ""
	}
	return d.bridgeIP.String()
}

// stopDNS closes the node's DNS server.
func (a *Agent) stopDNS() {
	d := a.dns.Swap(nil)
	if d == nil {
		return
	}
	_ = d.host.Close()
	if d.bridge != nil {
		_ = d.bridge.Close()
	}
}

// DNSAddr is host:port of the node's DNS server for the host and process
// tasks while Run runs, or "".
func (a *Agent) DNSAddr() string {
	if d := a.dns.Load(); d != nil {
		return d.hostAddr
	}
	return ""
}

// updateDNS replaces the records of the node's DNS server with e: every
// service, its healthy running tasks and their ports. Names that are not
// DNS labels and node addresses that are not IPs are left out (and
// logged); the rest is served.
func (a *Agent) updateDNS(e api.Endpoints) {
	d := a.dns.Load()
	if d == nil {
		return
	}
	self := a.NodeID()
	hostRecs := map[string][]dns.Endpoint{}
	var bridgeRecs map[string][]dns.Endpoint
	if d.bridge != nil {
		bridgeRecs = map[string][]dns.Endpoint{}
	}
	for _, se := range e.Services {
		if !dnsLabel(se.Service) {
			a.log.Warn("service name is not a DNS label; it gets no DNS records", "service", se.Service)
			continue
		}
		hostRecs[se.Service] = []dns.Endpoint{}
		if bridgeRecs != nil {
			bridgeRecs[se.Service] = []dns.Endpoint{}
		}
		for _, b := range se.Backends {
			if !dnsLabel(b.TaskID) {
				a.log.Warn("task id is not a DNS label; it gets no DNS records", "service", se.Service, "task", b.TaskID)
				continue
			}
			ip, err := netip.ParseAddr(b.Host)
			if err != nil {
				d.warnHost(a, b.Host)
				continue
			}
			ip = ip.Unmap()
			ep := dns.Endpoint{ID: b.TaskID, IP: ip, Ports: dnsPorts(se.Ports, b.Ports)}
			hostRecs[se.Service] = append(hostRecs[se.Service], ep)
			if bridgeRecs == nil {
				continue
			}
			switch local := self != "" && b.NodeID == self; {
			case local || (ip.IsLoopback() && (self == "" || b.NodeID == "")):
				// On this node: a container reaches the host at the
				// bridge gateway, not at the node's address (a task
				// published on loopback only listens there).
				ep.IP = d.bridgeIP
			case ip.IsLoopback():
				continue // another node's loopback: reachable from nowhere here
			}
			bridgeRecs[se.Service] = append(bridgeRecs[se.Service], ep)
		}
	}
	if err := d.host.Update(hostRecs); err != nil {
		a.log.Error("dns refused the records", "err", err)
	}
	if bridgeRecs != nil {
		if err := d.bridge.Update(bridgeRecs); err != nil {
			a.log.Error("dns (bridge) refused the records", "err", err)
		}
	}
}

// warnHost logs once that a node address cannot be served.
func (d *nodeDNS) warnHost(a *Agent, host string) {
	d.mu.Lock()
	seen := d.warned[host]
	d.warned[host] = true
	d.mu.Unlock()
	if !seen {
		a.log.Warn("node address is not an IP; its tasks get no DNS records", "address", host)
	}
}

// dnsPorts pairs a service's ports with a task's host ports.
func dnsPorts(specs []api.PortSpec, hostPorts map[string]int) []dns.Port {
	var out []dns.Port
	for _, p := range specs {
		hp, ok := hostPorts[p.Name]
		proto := p.Protocol
		if proto == "" {
			proto = "tcp"
		}
		if !ok || hp < 1 || hp > 65535 || !dnsLabel(p.Name) || (proto != "tcp" && proto != "udp") {
			continue
		}
		out = append(out, dns.Port{Name: p.Name, Protocol: proto, Port: hp})
	}
	return out
}

// dnsLabel reports whether s can be one label of a DNS name (RFC 1123:
// letters, digits and inner hyphens, at most 63).
func dnsLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// taskDNS points a task at the node's DNS server, if it runs: a process
// task is told its address in BERTH_DNS, and gets the task address as its
// resolver (which its driver may give it or not); a container task gets the bridge
// address as its resolver, with the search domain "berth", and is told it
// in BERTH_DNS too. A container gets nothing when there is no bridge
// listener: the host address is not reachable from inside it.
func (a *Agent) taskDNS(t api.Task, spec *driver.StartSpec) {
	d := a.dns.Load()
	if d == nil {
		return
	}
	if t.Spec.Driver != api.DriverDocker {
		setDNSEnv(spec, d.hostAddr)
		if d.taskIP.IsValid() {
			spec.DNS = driver.Resolver{Servers: []string{d.taskIP.String()}, Search: []string{DNSDomain}}
		}
		return
	}
	if d.bridge == nil {
		return
	}
	spec.DNS = driver.Resolver{Servers: []string{d.bridgeIP.String()}, Search: []string{DNSDomain}}
	setDNSEnv(spec, net.JoinHostPort(d.bridgeIP.String(), "53"))
}
