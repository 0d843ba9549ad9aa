package cluster

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestNetworkReachability checks the harness itself: the test reaches a
// listener on a host, a host reaches another, a cut host is unreachable
// and a healed one reachable again, and cleanup leaves no namespace.
func TestNetworkReachability(t *testing.T) {
	RequireAvailable(t)
	t.Parallel()
	var names []string
	t.Run("net", func(t *testing.T) {
		nw := NewNetwork(t, 2)
		hosts := nw.Hosts()
		for _, h := range hosts {
			names = append(names, h.Name)
		}
		names = append(names, nw.hub)
		if !strings.HasPrefix(nw.Prefix, "10.") || hosts[0].IP == hosts[1].IP {
			t.Fatalf("bad addresses: prefix %s, %s %s", nw.Prefix, hosts[0].IP, hosts[1].IP)
		}
		var ln net.Listener
		if err := hosts[1].InNetns(func() (err error) {
			ln, err = net.Listen("tcp", hosts[1].IP+":0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		addr := ln.Addr().String()
		dial := func(from *Host) error {
			d := func() error {
				c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
				if err == nil {
					c.Close()
				}
				return err
			}
			if from == nil {
				return d()
			}
			return from.InNetns(d)
		}
		// Links come up asynchronously (carrier on a fresh veth): allow a
		// few seconds for the first packets.
		Eventually(t, 10*time.Second, func() error { return dial(nil) })
		Eventually(t, 10*time.Second, func() error { return dial(hosts[0]) })
		// The listener's own namespace is not the test's: its loopback
		// must not answer from here.
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strings.Split(addr, ":")[1], 200*time.Millisecond); err == nil {
			c.Close()
			t.Logf("note: something on the test's loopback answers on the same port")
		}
		hosts[1].Cut()
		if err := dial(hosts[0]); err == nil {
			t.Fatalf("%s still reaches %s after the cut", hosts[0].Name, addr)
		}
		hosts[1].Heal()
		Eventually(t, 10*time.Second, func() error { return dial(hosts[0]) })
	})
	for _, n := range names {
		if _, err := os.Stat("/run/netns/" + n); err == nil {
			t.Errorf("namespace %s still exists after cleanup", n)
		}
	}
}
