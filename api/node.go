package api

import (
	"net"
	"regexp"
)

// Bounds on what a node may claim about itself when it registers (ADR
// 0029). A node certificate proves which node is speaking, not that what it
// says is true; the bounds keep a wrong or hostile claim from dwarfing every
// real node in placement.
const (
	// MaxNodeCPUs is the most CPUs a node may claim (and the most online
	// CPUs its topology may list).
	MaxNodeCPUs = 1024
	// MaxNodeMemory is the most memory a node may claim: 64 TiB.
	MaxNodeMemory ByteSize = 64 << 40
	// MaxNodeDrivers is the most drivers a node may offer.
	MaxNodeDrivers = 16
	// MaxHostnameLen is the longest node hostname (a DNS name's limit).
	MaxHostnameLen = 253
)

var (
	// nodeHostname is the characters a node's hostname may have: those of
	// DNS names, and '_' (which some machines' names have).
	nodeHostname = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
	driverName   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)
)

// ValidHostname reports whether h may be a node's hostname: 1 to 253
// letters, digits, '.', '-' and '_', starting and ending with a letter or
// digit.
func ValidHostname(h string) bool {
	return len(h) >= 1 && len(h) <= MaxHostnameLen && nodeHostname.MatchString(h)
}

// ValidDriverName reports whether d may name a driver a node offers.
func ValidDriverName(d string) bool { return driverName.MatchString(d) }

// ValidNodeAddress reports whether a may be a node's address: an IP address
// or a host name, without a port (gateways add the task's port to it).
func ValidNodeAddress(a string) bool {
	if a == "" {
		return true
	}
	if net.ParseIP(a) != nil {
		return true
	}
	return ValidHostname(a)
}

// Why a node's address cannot carry mesh traffic (Node.AddressIssue).
const (
	// AddressMissing: the node registered no address.
	AddressMissing = "missing"
	// AddressUnspecified: the address is 0.0.0.0 or ::, which names no
	// machine.
	AddressUnspecified = "unspecified"
	// AddressLoopback: the address is a loopback address, and the cluster
	// has nodes on other machines, which cannot reach it.
	AddressLoopback = "loopback"
)

// NodeAddressIssue says why other nodes' gateways cannot reach tasks on n
// at its address ("" when they can). multiHost is whether the cluster spans
// machines (see MultiHost): on one machine, a loopback or missing address
// is reached at 127.0.0.1 and is fine.
func NodeAddressIssue(n Node, multiHost bool) string {
	if n.Address == "" {
		if multiHost {
			return AddressMissing
		}
		return ""
	}
	ip := net.ParseIP(n.Address)
	switch {
	case ip == nil:
		return "" // a host name: taken as given
	case ip.IsUnspecified():
		return AddressUnspecified
	case ip.IsLoopback() && multiHost:
		return AddressLoopback
	}
	return ""
}

// MultiHost reports whether nodes are on more than one machine: some node
// has an address that is neither missing, unspecified nor loopback. A
// cluster whose nodes all have loopback (or no) addresses is taken to be on
// one machine, as `berth up` is.
func MultiHost(nodes []Node) bool {
	for _, n := range nodes {
		if n.Address == "" {
			continue
		}
		ip := net.ParseIP(n.Address)
		if ip == nil || (!ip.IsLoopback() && !ip.IsUnspecified()) {
			return true
		}
	}
	return false
}

// MeshHost is the host other gateways dial to reach n's tasks, and whether
// they can: n's address, 127.0.0.1 on a one-machine cluster when n has no
// address, or nothing (false) when n's address is unusable (see
// NodeAddressIssue).
func MeshHost(n Node, multiHost bool) (string, bool) {
	if NodeAddressIssue(n, multiHost) != "" {
		return "", false
	}
	if n.Address == "" {
		return "127.0.0.1", true
	}
	return n.Address, true
}

// ReservedPort is a port Berth itself listens on: a published port that
// matches one is refused at deploy, since the gateway could not open it.
type ReservedPort struct {
	// Port is the port number.
	Port int `json:"port"`
	// Protocol is "tcp" or "udp".
	Protocol string `json:"protocol"`
	// Use says what listens there ("the gateway's HTTP entrypoint").
	Use string `json:"use"`
}

// DefaultBerthPorts are the ports Berth listens on by default on every
// machine it runs on; no service may publish them (ADR 0029). Ports moved
// with flags are reported by each node (NodeRegistration.ReservedPorts) and
// refused as well.
var DefaultBerthPorts = []ReservedPort{
	{7443, "tcp", "the manager's API (berth server --listen)"},
	{7444, "tcp", "etcd's peer port (--etcd-peer-port)"},
	{7445, "tcp", "the agent's log server (--log-listen, as `berth join-token worker` prints it)"},
	{7453, "tcp", "the agent's DNS (--dns)"},
	{7453, "udp", "the agent's DNS (--dns)"},
	{7480, "tcp", "the gateway's HTTP entrypoint (--mesh-http)"},
	{7481, "tcp", "the gateway's HTTPS entrypoint (--mesh-https)"},
}

// BerthPortUse returns what of Berth listens on a published port by
// default ("" when nothing does).
func BerthPortUse(protocol string, port int) string {
	if protocol == "" {
		protocol = "tcp"
	}
	for _, r := range DefaultBerthPorts {
		if r.Port == port && r.Protocol == protocol {
			return r.Use
		}
	}
	return ""
}
