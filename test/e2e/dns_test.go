package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dnsPort returns a port free a moment ago for both UDP and TCP on
// 127.0.0.1, from 61000-64999 (see meshPort).
func dnsPort(t *testing.T) int {
	t.Helper()
	for range 200 {
		p := 61000 + rand.IntN(4000)
		addr := "127.0.0.1:" + strconv.Itoa(p)
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		l, err := net.Listen("tcp", addr)
		u.Close()
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no free port in 61000-64999")
	return 0
}

// TestDNSServiceDiscovery asks the agent of a running `berth up` for
// hello.berth through a real resolver client (Go's, talking DNS on the
// wire, as dig would): the A and SRV records are the healthy tasks and
// their ports, each answers on them, a killed task leaves the answers, and
// a removed service is a name that does not exist.
func TestDNSServiceDiscovery(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	addr := "127.0.0.1:" + strconv.Itoa(dnsPort(t))
	b := startBerthFlags(t, []string{"--dns", addr}, helloSpec())
	tasks, _ := b.waitConverged("hello", 3, deployTimeout)

	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	type answer struct {
		hosts []string
		srv   map[int]string // port → target
	}
	ask := func() (answer, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var a answer
		hosts, err := r.LookupHost(ctx, "hello.berth.")
		if err != nil {
			return a, err
		}
		_, srvs, err := r.LookupSRV(ctx, "http", "tcp", "hello.berth.")
		if err != nil {
			return a, err
		}
		a.hosts, a.srv = hosts, map[int]string{}
		for _, s := range srvs {
			a.srv[int(s.Port)] = s.Target
		}
		return a, nil
	}
	ports := func(a answer) []int {
		var ps []int
		for p := range a.srv {
			ps = append(ps, p)
		}
		sort.Ints(ps)
		return ps
	}
	want := func(vs []int) []int { sort.Ints(vs); return vs }

	var first answer
	eventually(t, 10*time.Second, func() error {
		a, err := ask()
		if err != nil {
			return err
		}
		w := want([]int{tasks[1].Ports["http"], tasks[2].Ports["http"], tasks[3].Ports["http"]})
		if !slices.Equal(ports(a), w) {
			return fmt.Errorf("SRV ports %v, want the tasks' %v", ports(a), w)
		}
		first = a
		return nil
	})
	if len(first.hosts) == 0 {
		t.Fatal("no A records")
	}
	// Every SRV target resolves, and the task answers there.
	client := &http.Client{Timeout: 5 * time.Second}
	for port, target := range first.srv {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		ips, err := r.LookupHost(ctx, target)
		cancel()
		if err != nil || len(ips) != 1 {
			t.Fatalf("SRV target %s: %v %v", target, ips, err)
		}
		resp, err := client.Get("http://" + net.JoinHostPort(ips[0], strconv.Itoa(port)) + "/")
		if err != nil {
			t.Fatalf("GET via DNS (%s → %s:%d): %v", target, ips[0], port, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET via DNS (%s:%d): %d", ips[0], port, resp.StatusCode)
		}
	}

	// A killed replica leaves the answers; its replacement joins them.
	gone := tasks[2]
	b.killTask(gone.PID)
	took := eventually(t, 5*time.Second, func() error {
		a, err := ask()
		if err != nil && !isNotFound(err) {
			return err
		}
		if _, ok := a.srv[gone.Ports["http"]]; ok {
			return fmt.Errorf("the killed task's port %d is still answered", gone.Ports["http"])
		}
		return nil
	})
	t.Logf("a killed task left the DNS answers %s after the kill", took.Round(time.Millisecond))
	now, _ := b.waitConverged("hello", 3, deployTimeout)
	eventually(t, 5*time.Second, func() error {
		a, err := ask()
		if err != nil {
			return err
		}
		w := want([]int{now[1].Ports["http"], now[2].Ports["http"], now[3].Ports["http"]})
		if !slices.Equal(ports(a), w) {
			return fmt.Errorf("SRV ports %v, want %v", ports(a), w)
		}
		return nil
	})

	// A removed service is an unknown name.
	b.mustCLI("service", "rm", "hello")
	eventually(t, 10*time.Second, func() error {
		_, err := ask()
		if !isNotFound(err) {
			return fmt.Errorf("hello.berth after rm: %v, want not found", err)
		}
		return nil
	})
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// TestDNSProcessTaskResolver runs a process task that looks a service up
// the way any program does, through the C library and /etc/resolv.conf
// (getent hosts hello): its resolver is the agent's task listener, with the
// search domain berth, so the bare service name resolves. The host's
// /etc/resolv.conf is not touched.
func TestDNSProcessTaskResolver(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	if _, err := exec.LookPath("getent"); err != nil {
		t.Skip("getent (Debian's libc-bin) is not installed")
	}
	hostBefore, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Skipf("this host has no /etc/resolv.conf: %v", err)
	}
	dir := publicTempDir(t) // the task, running as nobody, writes here
	out, rc := filepath.Join(dir, "hosts"), filepath.Join(dir, "resolv.conf")
	spec := filepath.Join(t.TempDir(), "asker.yaml")
	script := fmt.Sprintf("while :; do getent hosts hello > %[1]s.tmp && mv %[1]s.tmp %[1]s; cp /etc/resolv.conf %[2]s; sleep 0.2; done", out, rc)
	if err := os.WriteFile(spec, []byte("name: asker\ntask:\n  driver: process\n  command: [/bin/sh, -c, "+strconv.Quote(script)+"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A task address of this test's own (other berth processes of the
	// suite may hold the default one).
	taskIP := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(250), rand.IntN(250), 1+rand.IntN(250))
	addr := "127.0.0.1:" + strconv.Itoa(dnsPort(t))
	b := startBerthFlags(t, []string{"--dns", addr, "--task-dns", taskIP + ":53"}, helloSpec(), spec)
	b.waitConverged("hello", 3, deployTimeout)

	eventually(t, 20*time.Second, func() error {
		got, err := os.ReadFile(out)
		if err != nil {
			return err
		}
		if !strings.Contains(string(got), "hello.berth") {
			return fmt.Errorf("getent hosts hello in the task: %q", got)
		}
		return nil
	})
	got, err := os.ReadFile(rc)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "nameserver "+taskIP+"\n") || !strings.Contains(string(got), "search berth\n") {
		t.Errorf("the task's /etc/resolv.conf:\n%s", got)
	}
	if after, err := os.ReadFile("/etc/resolv.conf"); err != nil || string(after) != string(hostBefore) {
		t.Errorf("the host's /etc/resolv.conf changed: %q (%v), was %q", after, err, hostBefore)
	}
}
