package docker

import (
	"errors"
	"net/netip"
	"testing"

	dnetwork "github.com/docker/docker/api/types/network"
)

// TestBridgeGateway covers where the host's address on the bridge network
// comes from. The case that matters most is the second: Debian's Docker
// Engine 20.10, just installed and started, reports the default bridge's
// subnet and no gateway.
func TestBridgeGateway(t *testing.T) {
	docker0 := func(name string) ([]netip.Prefix, error) {
		if name != "docker0" {
			return nil, errors.New("no such interface")
		}
		return []netip.Prefix{netip.MustParsePrefix("fe80::42:68ff:fe25:8cc2/64"), netip.MustParsePrefix("172.17.0.1/16")}, nil
	}
	noInterfaces := func(string) ([]netip.Prefix, error) { return nil, errors.New("no such interface") }
	fresh := dnetwork.Inspect{
		Name:    "bridge",
		IPAM:    dnetwork.IPAM{Config: []dnetwork.IPAMConfig{{Subnet: "172.17.0.0/16"}}},
		Options: map[string]string{bridgeOption: "docker0"},
	}
	elsewhere := fresh
	elsewhere.IPAM = dnetwork.IPAM{Config: []dnetwork.IPAMConfig{{Subnet: "10.99.0.0/24"}}}
	for _, tc := range []struct {
		name  string
		nw    dnetwork.Inspect
		addrs func(string) ([]netip.Prefix, error)
		want  string // "" for an error
	}{
		{"IPAM gateway", dnetwork.Inspect{IPAM: dnetwork.IPAM{Config: []dnetwork.IPAMConfig{{Subnet: "172.18.0.0/16", Gateway: "172.18.0.254"}}}}, noInterfaces, "172.18.0.254"},
		{"no gateway: the bridge interface's address", fresh, docker0, "172.17.0.1"},
		{"no gateway, interface address outside the subnet: first host", elsewhere, docker0, "10.99.0.1"},
		{"no gateway, interface unreadable: first host", fresh, noInterfaces, "172.17.0.1"},
		{"no gateway, no bridge name: first host", dnetwork.Inspect{IPAM: fresh.IPAM}, docker0, "172.17.0.1"},
		{"IPv6 gateway only, IPv4 subnet", dnetwork.Inspect{IPAM: dnetwork.IPAM{Config: []dnetwork.IPAMConfig{{Subnet: "fd00::/64", Gateway: "fd00::1"}, {Subnet: "192.168.77.0/24"}}}}, noInterfaces, "192.168.77.1"},
		{"nothing usable", dnetwork.Inspect{IPAM: dnetwork.IPAM{Config: []dnetwork.IPAMConfig{{Subnet: "fd00::/64"}}}}, docker0, ""},
		{"a /32 subnet has no host", dnetwork.Inspect{IPAM: dnetwork.IPAM{Config: []dnetwork.IPAMConfig{{Subnet: "10.1.1.255/32"}}}}, noInterfaces, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bridgeGateway(tc.nw, tc.addrs)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("bridgeGateway = %s, want an error", got)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Fatalf("bridgeGateway = %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}
