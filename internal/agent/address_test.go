package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// localIP returns an address of this machine that is not loopback, or skips.
func localIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skip(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	t.Skip("no non-loopback IPv4 address on this machine")
	return ""
}

func TestDetectAddress(t *testing.T) {
	if got, err := DetectAddress("https://127.0.0.1:7443"); err != nil || got != "127.0.0.1" {
		t.Errorf("manager on loopback: %q %v", got, err)
	}
	ip := localIP(t)
	if got, err := DetectAddress("https://" + net.JoinHostPort(ip, "7443")); err != nil || got != ip {
		t.Errorf("manager at %s: %q %v, want %s", ip, got, err, ip)
	}
	if _, err := DetectAddress("not a url"); err == nil {
		t.Error("no error for a bad URL")
	}
}

// serve answers 200 on a listener at host:0 until the test ends.
func serve(t *testing.T, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// A task that listens on loopback only cannot be reached by other nodes'
// gateways, which dial the node's address: its HTTP and TCP checks dial that
// address too, so it is not healthy. On a node without an address (one
// machine) the checks dial 127.0.0.1.
func TestHealthChecksDialTheNodeAddress(t *testing.T) {
	ip := localIP(t)
	loopOnly, everywhere := serve(t, "127.0.0.1"), serve(t, "0.0.0.0")
	check := func(address string, port int, tcp bool) error {
		a := &Agent{cfg: Config{Address: address}}
		h := &api.HealthCheck{HTTP: &api.HTTPCheck{Port: "http", Path: "/"}}
		if tcp {
			h = &api.HealthCheck{TCP: &api.TCPCheck{Port: "http"}}
		}
		task := api.Task{ID: "t", Ports: map[string]int{"http": port}, Spec: api.TaskSpec{Health: h}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return a.healthProbe(task, nil)(ctx)
	}
	for _, tcp := range []bool{false, true} {
		kind := map[bool]string{false: "http", true: "tcp"}[tcp]
		if err := check(ip, loopOnly, tcp); err == nil {
			t.Errorf("%s: a task on 127.0.0.1:%d passed its check on a node at %s", kind, loopOnly, ip)
		}
		if err := check(ip, everywhere, tcp); err != nil {
			t.Errorf("%s: a task on every address failed its check on a node at %s: %v", kind, ip, err)
		}
		for _, addr := range []string{"", "127.0.0.1", "0.0.0.0"} {
			if err := check(addr, loopOnly, tcp); err != nil {
				t.Errorf("%s: node address %q: a task on 127.0.0.1:%s failed its check: %v", kind, addr, strconv.Itoa(loopOnly), err)
			}
		}
	}
}

// The agent reports the ports it listens on itself, so that the API refuses
// services publishing them (the gateway could not open them).
func TestReservedPorts(t *testing.T) {
	a := &Agent{cfg: Config{
		Mesh: &MeshConfig{HTTPAddr: "0.0.0.0:8480", HTTPSAddr: "127.0.0.1:0"},
		DNS:  &DNSConfig{Addr: "127.0.0.1:7453", TaskAddr: "127.0.0.153:53"},
	}}
	got := a.reservedPorts(&logServer{url: "https://10.0.0.2:7445"})
	var s []string
	for _, p := range got {
		s = append(s, p.Protocol+"/"+strconv.Itoa(p.Port))
	}
	if want := "[tcp/8480 tcp/7453 udp/7453 tcp/53 udp/53 tcp/7445]"; fmt.Sprint(s) != want {
		t.Fatalf("reserved ports %v, want %s", s, want)
	}
}
