package gateway

import (
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	be := []Backend{{ID: "t1", Addr: "127.0.0.1:9000"}}
	cases := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{"empty", Config{}, nil},
		{"ok", Config{
			Published: []Published{{Service: "a", Port: 8000, Backends: be}, {Service: "b", Port: 8000, Protocol: "udp", Backends: be}},
			Routes: []Route{{Service: "a", Host: "shop.example.test", Path: "/orders", Backends: be},
				{Service: "b", Host: "shop.example.test", Path: "/", Backends: be},
				{Service: "c", Host: "*.example.test", Backends: be}},
		}, nil},
		{"same port two services", Config{Published: []Published{
			{Service: "web", Port: 8000, Backends: be}, {Service: "api", Port: 8000, Backends: be}}},
			[]string{`services "web" and "api" both publish tcp port 8000`, "published[1].port"}},
		{"same port same service", Config{Published: []Published{
			{Service: "web", Port: 8000}, {Service: "web", Port: 8000}}},
			[]string{`service "web" publishes tcp port 8000 twice`}},
		{"entrypoint port", Config{Published: []Published{{Service: "web", Port: 80}}},
			[]string{"which is the gateway's http entrypoint"}},
		{"bad port and protocol", Config{Published: []Published{{Service: "web", Port: 70000, Protocol: "sctp"}}},
			[]string{"port 70000", `protocol "sctp"`}},
		{"route clash", Config{Routes: []Route{
			{Service: "shop", Host: "shop.example.test", Path: "/orders"},
			{Service: "orders", Host: "Shop.example.test", Path: "/orders/"}}},
			[]string{`route shop.example.test/orders of service "orders" clashes with the same route of service "shop"`}},
		{"route twice", Config{Routes: []Route{{Service: "shop", Path: "/"}, {Service: "shop"}}},
			[]string{`service "shop" has route (any host)/ twice`}},
		{"bad host", Config{Routes: []Route{{Service: "a", Host: "shop.*.test"}, {Service: "b", Host: "*.test"}, {Service: "c", Host: "a b"}}},
			[]string{"routes[0].host", "routes[1].host", "routes[2].host"}},
		{"bad path", Config{Routes: []Route{{Service: "a", Path: "orders"}, {Service: "b", Path: "/a/../b"}, {Service: "c", Path: "/x?y"}}},
			[]string{"routes[0].path", "routes[1].path", "routes[2].path"}},
		{"bad backends", Config{Routes: []Route{{Service: "a", Backends: []Backend{
			{ID: "", Addr: "127.0.0.1:1"}, {ID: "x", Addr: "nohost"}, {ID: "y", Addr: "h:0"}, {ID: "y", Addr: "h:1"}}}}},
			[]string{"backends[0].id", "backends[1].addr", "backends[2].addr", `backend "y" is listed twice`}},
		{"bad policy", Config{Routes: []Route{{Service: "a", Policy: "random"}}}, []string{"routes[0].policy"}},
		{"negative timeout", Config{Routes: []Route{{Service: "a", Timeout: -1}}}, []string{"routes[0].timeout"}},
		{"no service", Config{Routes: []Route{{}}, Published: []Published{{Port: 1}}}, []string{"routes[0].service", "published[0].service"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := validate(&c.cfg, map[int]string{80: "http"})
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error does not wrap ErrInvalidConfig: %v", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestUpdateRejectsAndKeepsOldConfig: a bad config changes nothing; the old
// one is still served.
func TestUpdateRejectsAndKeepsOldConfig(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	a := httpBackend(t, "a")
	tb := startTCPBackend(t, "tcp-a")
	port := freePort(t, "tcp")
	good := Config{
		Routes:    []Route{{Service: "shop", Host: "shop.example.test", Path: "/", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}}},
		Published: []Published{{Service: "echo", Port: port, Backends: []Backend{{ID: "e", Addr: tb.addr()}}}},
	}
	mustUpdate(t, g, good)
	url := "http://" + g.HTTPAddr().String() + "/"
	c := noRedirect()

	port2 := freePort(t, "tcp")
	bad := []Config{
		// Two services on one port.
		{Published: []Published{
			{Service: "echo", Port: port2, Backends: []Backend{{ID: "e", Addr: tb.addr()}}},
			{Service: "other", Port: port2, Backends: []Backend{{ID: "o", Addr: tb.addr()}}}}},
		// A route clash.
		{Routes: []Route{
			{Service: "shop", Host: "shop.example.test", Backends: []Backend{{ID: "a", Addr: hostPort(a)}}},
			{Service: "intruder", Host: "shop.example.test", Path: "/", Backends: []Backend{{ID: "b", Addr: hostPort(a)}}}}},
	}
	for i, cfg := range bad {
		err := g.Update(cfg)
		if !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("bad config %d: err %v, want ErrInvalidConfig", i, err)
		}
		if i == 0 && !strings.Contains(err.Error(), `"echo"`) || i == 0 && !strings.Contains(err.Error(), `"other"`) {
			t.Errorf("error %q does not name both services", err)
		}
		if i == 1 && (!strings.Contains(err.Error(), `"shop"`) || !strings.Contains(err.Error(), `"intruder"`)) {
			t.Errorf("error %q does not name both services", err)
		}
		if code, e, _ := get(t, c, url, "shop.example.test"); code != 200 || e.Name != "a" {
			t.Fatalf("after bad config %d: %d %q, want 200 from a", i, code, e.Name)
		}
		if ans, err := tcpAsk("127.0.0.1:"+strconv.Itoa(port), "hi"); err != nil || ans != "tcp-a:hi" {
			t.Fatalf("after bad config %d: published port answers %q, %v", i, ans, err)
		}
	}
	// Bad config must not have opened port2.
	if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port2)); err == nil {
		c.Close()
		t.Fatalf("port %d of a rejected config is open", port2)
	}

	// A port that cannot be opened fails the update as a whole.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	port3 := freePort(t, "tcp")
	err = g.Update(Config{Published: []Published{
		{Service: "new", Port: port3, Backends: []Backend{{ID: "n", Addr: tb.addr()}}},
		{Service: "clash", Port: busyPort, Backends: []Backend{{ID: "n", Addr: tb.addr()}}},
	}})
	if err == nil || !strings.Contains(err.Error(), `"clash"`) {
		t.Fatalf("port in use: err %v", err)
	}
	if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port3)); err == nil {
		c.Close()
		t.Fatalf("port %d opened by a failed update is still open", port3)
	}
	if code, _, _ := get(t, c, url, "shop.example.test"); code != http.StatusOK {
		t.Fatalf("after failed update: %d", code)
	}
}
