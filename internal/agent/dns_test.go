package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/internal/agent/agenttest"
	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/driver/docker"
	"github.com/berth-project/berth/internal/driver/docker/dockertest"
	"github.com/berth-project/berth/internal/gateway"
	"github.com/berth-project/berth/internal/gateway/dns"
	"github.com/berth-project/berth/internal/testutil"
)

// newDNSAgent returns an agent (not run) with dc as its DNS config.
func newDNSAgent(t *testing.T, dc *DNSConfig, drivers map[string]driver.Driver) *Agent {
	t.Helper()
	h := newHarness(t)
	h.cfg.DNS = dc
	if drivers != nil {
		h.cfg.Drivers = drivers
	}
	a, err := New(h.cfg, h.m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// resolverFor is a real resolver client (Go's own, not the host's
// resolv.conf) that asks only the server at addr.
func resolverFor(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

func lookupHost(t *testing.T, r *net.Resolver, name string) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := r.LookupHost(ctx, name)
	sort.Strings(addrs)
	return addrs, err
}

func lookupSRV(t *testing.T, r *net.Resolver, service, proto, name string) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, srvs, err := r.LookupSRV(ctx, service, proto, name)
	var out []string
	for _, s := range srvs {
		out = append(out, fmt.Sprintf("%s:%d", s.Target, s.Port))
	}
	sort.Strings(out)
	return out, err
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// fakeUpstream is a DNS server for the zone upstream.test., standing in for
// the node's resolver.
func fakeUpstream(t *testing.T) string {
	t.Helper()
	up, err := dns.New(dns.Options{Domain: "upstream.test."})
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Update(map[string][]dns.Endpoint{"ext": {{ID: "x", IP: netip.MustParseAddr("192.0.2.7")}}}); err != nil {
		t.Fatal(err)
	}
	if err := up.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	return up.Addr()
}

func webService(backends ...api.EndpointBackend) api.ServiceEndpoints {
	return api.ServiceEndpoints{
		Service: "web",
		Ports: []api.PortSpec{
			{Name: "http", Protocol: "tcp", Publish: 18080, Mode: api.PublishIngress},
			{Name: "metrics", Protocol: "tcp"},
			{Name: "q", Protocol: "udp"},
		},
		Backends: backends,
	}
}

// The agent's DNS server answers A and SRV for every service from the
// endpoints, drops a task that left them on the next update, and forwards
// names outside the zone to the upstream.
func TestDNSServesEndpoints(t *testing.T) {
	a := newDNSAgent(t, &DNSConfig{TaskAddr: DNSOff, Addr: "127.0.0.1:0", Upstream: fakeUpstream(t), BridgeAddr: DNSOff}, nil)
	if err := a.startDNS(); err != nil {
		t.Fatal(err)
	}
	defer a.stopDNS()
	addr := a.DNSAddr()
	if addr == "" || strings.HasSuffix(addr, ":0") {
		t.Fatalf("DNSAddr = %q", addr)
	}
	r := resolverFor(addr)

	t1 := api.EndpointBackend{TaskID: "t1", NodeID: "n1", Host: "10.0.0.1", Ports: map[string]int{"http": 20001, "metrics": 20002, "q": 20003}}
	t2 := api.EndpointBackend{TaskID: "t2", NodeID: "n2", Host: "10.0.0.2", Ports: map[string]int{"http": 20011, "metrics": 20012, "q": 20013}}
	a.updateDNS(api.Endpoints{Services: []api.ServiceEndpoints{
		{Service: "plain", Backends: []api.EndpointBackend{{TaskID: "p1", NodeID: "n1", Host: "10.0.0.1"}}},
		{Service: "idle", Backends: []api.EndpointBackend{}},
		webService(t1, t2),
	}})

	if got, err := lookupHost(t, r, "web.berth."); err != nil || !reflect.DeepEqual(got, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Errorf("web.berth = %v, %v", got, err)
	}
	// A service without ports still has its address.
	if got, err := lookupHost(t, r, "plain.berth."); err != nil || !reflect.DeepEqual(got, []string{"10.0.0.1"}) {
		t.Errorf("plain.berth = %v, %v", got, err)
	}
	// SRV of every task port, published or not, tcp and udp.
	for _, c := range []struct {
		svc, proto string
		want       []string
	}{
		{"http", "tcp", []string{"t1.web.berth.:20001", "t2.web.berth.:20011"}},
		{"metrics", "tcp", []string{"t1.web.berth.:20002", "t2.web.berth.:20012"}},
		{"q", "udp", []string{"t1.web.berth.:20003", "t2.web.berth.:20013"}},
	} {
		if got, err := lookupSRV(t, r, c.svc, c.proto, "web.berth."); err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("_%s._%s.web.berth = %v, %v; want %v", c.svc, c.proto, got, err, c.want)
		}
	}
	if got, err := lookupHost(t, r, "t2.web.berth."); err != nil || !reflect.DeepEqual(got, []string{"10.0.0.2"}) {
		t.Errorf("t2.web.berth = %v, %v", got, err)
	}
	for _, name := range []string{"idle.berth.", "nope.berth.", "t9.web.berth."} {
		if got, err := lookupHost(t, r, name); !isNotFound(err) {
			t.Errorf("%s = %v, %v; want not found", name, got, err)
		}
	}
	// Outside the zone: forwarded.
	if got, err := lookupHost(t, r, "ext.upstream.test."); err != nil || !reflect.DeepEqual(got, []string{"192.0.2.7"}) {
		t.Errorf("ext.upstream.test = %v, %v", got, err)
	}

	// t2 turns unhealthy: the next endpoints leave it out, and the next
	// query no longer finds it.
	start := time.Now()
	a.updateDNS(api.Endpoints{Services: []api.ServiceEndpoints{webService(t1)}})
	got, err := lookupHost(t, r, "web.berth.")
	took := time.Since(start)
	if err != nil || !reflect.DeepEqual(got, []string{"10.0.0.1"}) {
		t.Errorf("after t2 left: web.berth = %v, %v", got, err)
	}
	if took > 200*time.Millisecond {
		t.Errorf("an update took %s to show in answers", took)
	}
	t.Logf("update to answer: %s", took)
	if srv, err := lookupSRV(t, r, "http", "tcp", "web.berth."); err != nil || !reflect.DeepEqual(srv, []string{"t1.web.berth.:20001"}) {
		t.Errorf("after t2 left: SRV = %v, %v", srv, err)
	}
	if _, err := lookupHost(t, r, "t2.web.berth."); !isNotFound(err) {
		t.Errorf("after t2 left: t2.web.berth: %v, want not found", err)
	}
	if _, err := lookupHost(t, r, "plain.berth."); !isNotFound(err) {
		t.Errorf("after plain was removed: %v, want not found", err)
	}

	// A process task is told the address.
	spec := driver.StartSpec{Env: []string{"A=1", "BERTH_DNS=spoofed", "Z=2"}}
	a.taskDNS(api.Task{Spec: api.TaskSpec{Driver: api.DriverProcess}}, &spec)
	if want := []string{"A=1", "BERTH_DNS=" + addr, "Z=2"}; !reflect.DeepEqual(spec.Env, want) {
		t.Errorf("process env = %q, want %q", spec.Env, want)
	}
	// Without a bridge listener a container gets nothing: the host address
	// is not reachable from inside it.
	spec = driver.StartSpec{Env: []string{"A=1"}}
	a.taskDNS(api.Task{Spec: api.TaskSpec{Driver: api.DriverDocker}}, &spec)
	if !reflect.DeepEqual(spec.Env, []string{"A=1"}) || spec.DNS.Servers != nil {
		t.Errorf("container without bridge: %+v", spec)
	}

	a.stopDNS()
	if a.DNSAddr() != "" {
		t.Error("DNSAddr after stopDNS")
	}
	a.updateDNS(api.Endpoints{}) // a no-op once stopped
	spec = driver.StartSpec{}
	a.taskDNS(api.Task{}, &spec)
	if spec.Env != nil {
		t.Errorf("env after stopDNS: %q", spec.Env)
	}
}

// Names that cannot be DNS labels and node addresses that are not IPs are
// left out; the rest of the update still applies.
func TestDNSSkipsWhatItCannotServe(t *testing.T) {
	a := newDNSAgent(t, &DNSConfig{TaskAddr: DNSOff, Addr: "127.0.0.1:0", Upstream: DNSOff, BridgeAddr: DNSOff}, nil)
	if err := a.startDNS(); err != nil {
		t.Fatal(err)
	}
	defer a.stopDNS()
	r := resolverFor(a.DNSAddr())
	a.updateDNS(api.Endpoints{Services: []api.ServiceEndpoints{
		{Service: "bad_name", Backends: []api.EndpointBackend{{TaskID: "x1", Host: "10.0.0.9"}}},
		{Service: "web", Ports: []api.PortSpec{{Name: "http"}, {Name: "odd_port"}},
			Backends: []api.EndpointBackend{
				{TaskID: "t1", Host: "10.0.0.1", Ports: map[string]int{"http": 20001, "odd_port": 20002}},
				{TaskID: "bad_id", Host: "10.0.0.2"},
				{TaskID: "t3", Host: "node3.example"},
				{TaskID: "t4", Host: "::ffff:10.0.0.4", Ports: map[string]int{"http": 0}},
			}},
	}})
	if got, err := lookupHost(t, r, "web.berth."); err != nil || !reflect.DeepEqual(got, []string{"10.0.0.1", "10.0.0.4"}) {
		t.Errorf("web.berth = %v, %v", got, err)
	}
	if got, err := lookupSRV(t, r, "http", "tcp", "web.berth."); err != nil || !reflect.DeepEqual(got, []string{"t1.web.berth.:20001"}) {
		t.Errorf("SRV = %v, %v", got, err)
	}
	// No upstream: a name outside the zone is refused, not answered.
	if got, err := lookupHost(t, r, "example.com."); err == nil {
		t.Errorf("example.com = %v without an upstream", got)
	}
}

// Queries on the bridge listener get addresses a container can connect to:
// a task on this node is at the bridge gateway; a task elsewhere at its
// node's address; another node's loopback address is left out.
func TestDNSBridgeView(t *testing.T) {
	// 127.0.0.2 stands in for the bridge gateway (on Docker: 172.17.0.1).
	a := newDNSAgent(t, &DNSConfig{TaskAddr: DNSOff, Addr: "127.0.0.1:0", Upstream: DNSOff, BridgeAddr: "127.0.0.2"}, nil)
	a.nodeID.Store("n1")
	if err := a.startDNSOn(0); err != nil {
		t.Fatal(err)
	}
	defer a.stopDNS()
	d := a.dns.Load()
	if d.bridge == nil || d.bridgeIP != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("no bridge listener: %+v", d)
	}
	a.updateDNS(api.Endpoints{Services: []api.ServiceEndpoints{webService(
		api.EndpointBackend{TaskID: "t1", NodeID: "n1", Host: "127.0.0.1", Ports: map[string]int{"http": 20001}},
		api.EndpointBackend{TaskID: "t2", NodeID: "n2", Host: "10.0.0.2", Ports: map[string]int{"http": 20011}},
		api.EndpointBackend{TaskID: "t3", NodeID: "n3", Host: "127.0.0.1", Ports: map[string]int{"http": 20021}},
		api.EndpointBackend{TaskID: "t4", NodeID: "n1", Host: "10.0.0.1", Ports: map[string]int{"http": 20031}},
	)}})
	host, bridge := resolverFor(a.DNSAddr()), resolverFor(d.bridge.Addr())
	if got, err := lookupHost(t, host, "web.berth."); err != nil || !reflect.DeepEqual(got, []string{"10.0.0.1", "10.0.0.2", "127.0.0.1"}) {
		t.Errorf("host view: web.berth = %v, %v", got, err)
	}
	if got, err := lookupHost(t, bridge, "web.berth."); err != nil || !reflect.DeepEqual(got, []string{"10.0.0.2", "127.0.0.2"}) {
		t.Errorf("bridge view: web.berth = %v, %v", got, err)
	}
	if got, err := lookupHost(t, bridge, "t4.web.berth."); err != nil || !reflect.DeepEqual(got, []string{"127.0.0.2"}) {
		t.Errorf("bridge view: t4 = %v, %v", got, err)
	}
	if got, err := lookupSRV(t, bridge, "http", "tcp", "web.berth."); err != nil ||
		!reflect.DeepEqual(got, []string{"t1.web.berth.:20001", "t2.web.berth.:20011", "t4.web.berth.:20031"}) {
		t.Errorf("bridge view: SRV = %v, %v", got, err)
	}
	// A container task gets the bridge as its resolver and "berth" to
	// search.
	spec := driver.StartSpec{Env: []string{"A=1"}}
	a.taskDNS(api.Task{Spec: api.TaskSpec{Driver: api.DriverDocker}}, &spec)
	want := driver.StartSpec{Env: []string{"A=1", "BERTH_DNS=127.0.0.2:53"},
		DNS: driver.Resolver{Servers: []string{"127.0.0.2"}, Search: []string{"berth"}}}
	if !reflect.DeepEqual(spec, want) {
		t.Errorf("container spec = %+v, want %+v", spec, want)
	}
}

func TestDNSConfig(t *testing.T) {
	// Off: nothing listens, nothing breaks.
	for _, dc := range []*DNSConfig{nil, {Addr: DNSOff}} {
		a := newDNSAgent(t, dc, nil)
		if err := a.startDNS(); err != nil {
			t.Fatal(err)
		}
		if a.DNSAddr() != "" {
			t.Errorf("%+v: DNSAddr = %q", dc, a.DNSAddr())
		}
		a.updateDNS(api.Endpoints{Services: []api.ServiceEndpoints{webService()}})
		a.stopDNS()
	}
	for _, dc := range []DNSConfig{
		{Addr: "nonsense"},
		{Addr: "127.0.0.1:0", Upstream: "no-port"},
		{Addr: "127.0.0.1:0", BridgeAddr: "not-an-ip"},
	} {
		a := newDNSAgent(t, &dc, nil)
		if err := a.startDNS(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", dc, err)
			a.stopDNS()
		}
	}
	// An address in use is an error that says so.
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a := newDNSAgent(t, &DNSConfig{Addr: l.LocalAddr().String()}, nil)
	if err := a.startDNS(); err == nil || !strings.Contains(err.Error(), l.LocalAddr().String()) {
		t.Errorf("address in use: %v", err)
		a.stopDNS()
	}
	// The default upstream comes from resolv.conf; no docker driver, no
	// bridge.
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(rc, []byte("# x\nsearch example\nnameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a = newDNSAgent(t, &DNSConfig{TaskAddr: DNSOff, Addr: "127.0.0.1:0", ResolvConf: rc}, nil)
	if err := a.startDNS(); err != nil {
		t.Fatal(err)
	}
	if d := a.dns.Load(); d.bridge != nil {
		t.Errorf("a bridge listener without a docker driver: %s", d.bridgeAddr())
	}
	a.stopDNS()
}

func TestResolvConfUpstream(t *testing.T) {
	dir := t.TempDir()
	for i, c := range []struct {
		conf, self, bridge, want string
	}{
		{"nameserver 10.0.0.53\nnameserver 10.0.0.54\n", "127.0.0.1:7453", "", "10.0.0.53:53"},
		{"nameserver 127.0.0.1\nnameserver 10.0.0.54\n", "127.0.0.1:53", "", "10.0.0.54:53"},
		{"nameserver 127.0.0.1\n", "127.0.0.1:7453", "", "127.0.0.1:53"},
		{"nameserver 172.17.0.1\nnameserver ::1\n", "127.0.0.1:7453", "172.17.0.1", "[::1]:53"},
		{"nameserver 10.1.1.1\n", "0.0.0.0:53", "", ""},
		{"#nameserver 10.0.0.1\noptions ndots:2\nnameserver bogus\n", "127.0.0.1:7453", "", ""},
		{"", "127.0.0.1:7453", "", ""},
	} {
		p := filepath.Join(dir, strconv.Itoa(i))
		if err := os.WriteFile(p, []byte(c.conf), 0o644); err != nil {
			t.Fatal(err)
		}
		var bridge netip.Addr
		if c.bridge != "" {
			bridge = netip.MustParseAddr(c.bridge)
		}
		if got := resolvConfUpstream(p, c.self, bridge); got != c.want {
			t.Errorf("%q (self %s): %q, want %q", c.conf, c.self, got, c.want)
		}
	}
	if got := resolvConfUpstream(filepath.Join(dir, "missing"), "127.0.0.1:7453", netip.Addr{}); got != "" {
		t.Errorf("missing file: %q", got)
	}
}

// Now that the endpoints list every task port, the gateway must still
// listen only for the ports published in ingress mode.
func TestMeshConfigSkipsUnpublishedPorts(t *testing.T) {
	got := meshConfig([]api.ServiceEndpoints{
		{Service: "plain", Backends: []api.EndpointBackend{{TaskID: "p1", Host: "10.0.0.1"}}},
		{Service: "web", LoadBalancing: api.LBRoundRobin, Ports: []api.PortSpec{
			{Name: "metrics", Protocol: "tcp"},
			{Name: "http", Protocol: "tcp", Publish: 18080, Mode: api.PublishIngress},
			{Name: "direct", Protocol: "tcp", Publish: 18081, Mode: api.PublishHost},
		}, Backends: []api.EndpointBackend{{TaskID: "t1", Host: "10.0.0.1", Ports: map[string]int{"metrics": 20001, "http": 20002, "direct": 18081}}}},
	})
	want := gateway.Config{Published: []gateway.Published{{Service: "web", Port: 18080, Protocol: "tcp", Policy: api.LBRoundRobin,
		Backends: []gateway.Backend{{ID: "t1", Addr: "10.0.0.1:20002"}}}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

// probeSource is a tiny program run in a container FROM scratch: it looks
// up a service by its bare name (through the search domain) and its port
// by SRV, connects, and prints the first line it reads.
const probeSource = `package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	name, port := os.Args[1], os.Args[2]
	addrs, err := net.DefaultResolver.LookupHost(ctx, name)
	if err != nil || len(addrs) == 0 {
		fmt.Println("lookup", name, addrs, err)
		os.Exit(2)
	}
	_, srvs, err := net.DefaultResolver.LookupSRV(ctx, port, "tcp", name+".berth.")
	if err != nil || len(srvs) == 0 {
		fmt.Println("srv", err)
		os.Exit(3)
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort(addrs[0], strconv.Itoa(int(srvs[0].Port))), 5*time.Second)
	if err != nil {
		fmt.Println("dial", err)
		os.Exit(4)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	fmt.Printf("%s %s", addrs[0], line)
	if err != nil {
		os.Exit(5)
	}
}
`

// A container started by the docker driver with the resolver the agent
// gives it finds a service by name and connects to it.
func TestDNSDockerTaskResolvesService(t *testing.T) {
	testutil.RequireRoot(t, "the agent answers containers on the bridge gateway's port 53")
	cli := dockertest.Client(t)
	drv, err := docker.New(docker.Config{Client: cli})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()

	// The probe image.
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte(probeSource), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "probe")
	build := exec.Command("go", "build", "-o", bin, src)
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the probe: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	tag := "berth-test/dnsprobe:" + strconv.FormatInt(time.Now().UnixNano(), 36)
	dockertest.BuildImage(t, cli, tag, "FROM scratch\nCOPY probe /probe\n", map[string]dockertest.File{"probe": {Data: data, Mode: 0o755}})

	// The agent's DNS, with the bridge found as in production. Port 53 on
	// the bridge may be held for a moment by another agent (a `berth up`
	// of another test): wait for it.
	a := newDNSAgent(t, &DNSConfig{TaskAddr: DNSOff, Addr: "127.0.0.1:0", Upstream: DNSOff}, map[string]driver.Driver{"docker": drv})
	a.nodeID.Store("node-1")
	var d *nodeDNS
	deadline := time.Now().Add(90 * time.Second)
	for {
		if err := a.startDNS(); err != nil {
			t.Fatal(err)
		}
		if d = a.dns.Load(); d.bridge != nil {
			break
		}
		a.stopDNS()
		if time.Now().After(deadline) {
			t.Fatal("the agent found no container bridge or could not bind its port 53 (see the log with BERTH_TEST_LOG=1)")
		}
		time.Sleep(200 * time.Millisecond)
	}
	defer a.stopDNS()
	t.Logf("bridge gateway %s", d.bridgeIP)

	// The "web" service: a task of this node whose port listens on every
	// address, as a process task's (here: a listener of the test).
	l, err := net.Listen("tcp", net.JoinHostPort(d.bridgeIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello from web\n")
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	a.updateDNS(api.Endpoints{Services: []api.ServiceEndpoints{{
		Service: "web", Ports: []api.PortSpec{{Name: "http", Protocol: "tcp"}},
		Backends: []api.EndpointBackend{{TaskID: "t1", NodeID: "node-1", Host: "127.0.0.1", Ports: map[string]int{"http": port}}},
	}}})

	// The probe task, built as the runner builds a docker task's spec.
	tk := api.Task{ID: "dnsprobe" + strconv.FormatInt(time.Now().UnixNano()%1e9, 10), ServiceName: "probe",
		Spec: api.TaskSpec{Driver: api.DriverDocker, Image: tag, Command: []string{"/probe", "web", "http"}}}
	logDir := t.TempDir()
	spec, _, err := buildStartSpec(tk, "node-1", "/unused", logDir, 1<<20, "", "")
	if err != nil {
		t.Fatal(err)
	}
	a.taskDNS(tk, &spec)
	if !slices.Contains(spec.DNS.Servers, d.bridgeIP.String()) || !slices.Contains(spec.Env, "BERTH_DNS="+d.bridgeIP.String()+":53") {
		t.Fatalf("the task was not given the resolver: %+v", spec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, err := drv.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	exit, err := h.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Stop(ctx, time.Second); err != nil { // removes the container, copies its logs
		t.Error(err)
	}
	out, _ := os.ReadFile(filepath.Join(logDir, tk.ID+".log"))
	want := d.bridgeIP.String() + " hello from web"
	if exit.Code != 0 || !strings.Contains(string(out), want) {
		t.Fatalf("probe exited %d; output:\n%s\nwant %q", exit.Code, out, want)
	}
}

// gatewayDriver is a container driver that can tell its bridge gateway.
type gatewayDriver struct {
	agenttest.Driver
	ip  netip.Addr
	err error
}

func (d *gatewayDriver) Name() string { return api.DriverDocker }
func (d *gatewayDriver) BridgeGateway(context.Context) (netip.Addr, error) {
	return d.ip, d.err
}

// The bridge address comes from a driver that can tell it; one that cannot
// leaves the bridge off (unless docker0 exists), and DNSOff turns it off.
func TestDNSBridgeFromDriver(t *testing.T) {
	d := &gatewayDriver{ip: netip.MustParseAddr("127.0.0.3")}
	a := newDNSAgent(t, &DNSConfig{TaskAddr: DNSOff, Addr: "127.0.0.1:0", Upstream: DNSOff}, map[string]driver.Driver{"docker": d})
	if err := a.startDNSOn(0); err != nil {
		t.Fatal(err)
	}
	if got := a.dns.Load().bridgeAddr(); got != "127.0.0.3" {
		t.Errorf("bridge = %q, want the driver's 127.0.0.3", got)
	}
	a.stopDNS()

	a = newDNSAgent(t, &DNSConfig{TaskAddr: DNSOff, Addr: "127.0.0.1:0", Upstream: DNSOff, BridgeAddr: DNSOff}, map[string]driver.Driver{"docker": d})
	if err := a.startDNSOn(0); err != nil {
		t.Fatal(err)
	}
	if got := a.dns.Load().bridgeAddr(); got != "" {
		t.Errorf("bridge = %q with BridgeAddr off", got)
	}
	a.stopDNS()

	d.err = errors.New("engine away")
	a = newDNSAgent(t, &DNSConfig{TaskAddr: DNSOff, Addr: "127.0.0.1:0", Upstream: DNSOff}, map[string]driver.Driver{"docker": d})
	if err := a.startDNSOn(0); err != nil {
		t.Fatal(err)
	}
	want := ""
	if ip, err := interfaceIPv4(dockerBridge); err == nil {
		want = ip.String() // the fallback: the docker0 interface
	}
	if got := a.dns.Load().bridgeAddr(); got != want {
		t.Errorf("bridge = %q after the driver failed, want %q", got, want)
	}
	a.stopDNS()
}

// TestDNSForProcessTasks checks the listener for process tasks' own
// resolv.conf: it answers the same records as the host listener on IP:53,
// and a process task's spec names it (with the search domain) beside
// BERTH_DNS. An address that is not IP:53 is a config error; one already
// in use leaves process tasks with the host's resolver.
func TestDNSForProcessTasks(t *testing.T) {
	testutil.RequireRoot(t, "the agent listens on port 53 (CI runs as root)")
	// A loopback address of this test's own, so that parallel tests and
	// agents do not meet on the default one.
	ip := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(250), rand.IntN(250), 1+rand.IntN(250))
	a := newDNSAgent(t, &DNSConfig{Addr: "127.0.0.1:0", TaskAddr: ip + ":53", Upstream: DNSOff, BridgeAddr: DNSOff}, nil)
	if err := a.startDNS(); err != nil {
		t.Fatal(err)
	}
	defer a.stopDNS()
	t1 := api.EndpointBackend{TaskID: "t1", NodeID: "n1", Host: "10.0.0.1", Ports: map[string]int{"http": 20001}}
	a.updateDNS(api.Endpoints{Services: []api.ServiceEndpoints{webService(t1)}})
	if got, err := lookupHost(t, resolverFor(ip+":53"), "web.berth."); err != nil || !reflect.DeepEqual(got, []string{"10.0.0.1"}) {
		t.Errorf("web.berth from the task listener = %v, %v", got, err)
	}
	spec := driver.StartSpec{}
	a.taskDNS(api.Task{Spec: api.TaskSpec{Driver: api.DriverProcess}}, &spec)
	want := driver.Resolver{Servers: []string{ip}, Search: []string{"berth"}}
	if !reflect.DeepEqual(spec.DNS, want) || !slices.Contains(spec.Env, "BERTH_DNS="+a.DNSAddr()) {
		t.Errorf("process task spec = %+v, want DNS %+v and BERTH_DNS", spec, want)
	}
	spec = driver.StartSpec{}
	a.taskDNS(api.Task{Spec: api.TaskSpec{Driver: api.DriverDocker}}, &spec)
	if spec.DNS.Servers != nil {
		t.Errorf("a container got the process tasks' resolver: %+v", spec.DNS)
	}

	for _, bad := range []string{"127.0.0.153:5353", "nonsense", "localhost:53"} {
		b := newDNSAgent(t, &DNSConfig{Addr: "127.0.0.1:0", TaskAddr: bad, Upstream: DNSOff, BridgeAddr: DNSOff}, nil)
		if err := b.startDNS(); !errors.Is(err, ErrConfig) {
			t.Errorf("TaskAddr %q: %v, want ErrConfig", bad, err)
			b.stopDNS()
		}
	}

	// In use (by the agent above): logged, and process tasks keep the
	// host's resolver.
	c := newDNSAgent(t, &DNSConfig{Addr: "127.0.0.1:0", TaskAddr: ip + ":53", Upstream: DNSOff, BridgeAddr: DNSOff}, nil)
	if err := c.startDNS(); err != nil {
		t.Fatalf("task address in use: %v, want a warning only", err)
	}
	defer c.stopDNS()
	spec = driver.StartSpec{}
	c.taskDNS(api.Task{Spec: api.TaskSpec{Driver: api.DriverProcess}}, &spec)
	if spec.DNS.Servers != nil {
		t.Errorf("process task got a resolver nobody answers on: %+v", spec.DNS)
	}
}
