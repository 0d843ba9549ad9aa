package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// udpEchoSource is a UDP echo server for the test (the berth binary has
// none): it answers each datagram on $PORT_ECHO with "<pid> <datagram>".
const udpEchoSource = `package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	c, err := net.ListenPacket("udp", ":"+os.Getenv("PORT_ECHO"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			os.Exit(1)
		}
		c.WriteTo([]byte(fmt.Sprintf("%d %s", os.Getpid(), buf[:n])), from)
	}
}
`

// buildUDPEcho builds udpEchoSource into dir and returns the binary's path.
func buildUDPEcho(t *testing.T, dir string) string {
	t.Helper()
	src := filepath.Join(dir, "udpecho")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"go.mod": "module udpecho\n\ngo 1.22\n", "main.go": udpEchoSource} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "udpecho-bin")
	cmd := exec.Command(goTool(), "build", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(cleanEnv(), "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the UDP echo server: %v\n%s", err, out)
	}
	return bin
}

// hostModePort returns a port free a moment ago for both tcp and udp, from
// 61000-64999 (outside the kernel's ephemeral range and Berth's task range,
// as meshPort explains).
func hostModePort(t *testing.T) int {
	t.Helper()
	for range 200 {
		p := 61000 + rand.IntN(4000)
		l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		c, err := net.ListenPacket("udp", ":"+strconv.Itoa(p))
		l.Close()
		if err != nil {
			continue
		}
		c.Close()
		return p
	}
	t.Fatal("no port free for tcp and udp in 61000-64999")
	return 0
}

// TestHostModePorts runs services whose ports are published in host mode on
// the one node of `berth up`: of two replicas of an HTTP service, one binds
// the published port itself and answers there while the other waits with a
// reason, until the service is scaled to one; a UDP service answers on its
// published port; the gateway serves neither; and a second service
// publishing the same port, in either mode, is rejected at deploy.
func TestHostModePorts(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	dir := t.TempDir()
	echoBin := buildUDPEcho(t, publicTempDir(t)) // run by tasks as nobody
	webPort, udpPort := hostModePort(t), hostModePort(t)
	for udpPort == webPort {
		udpPort = hostModePort(t)
	}
	write := func(name, doc string) string {
		t.Helper()
		p := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	webSpec := write("hweb", fmt.Sprintf(`name: hweb
replicas: 2
task:
  command: [berth, whoami, --port, "${PORT_HTTP}"]
  ports:
    - {name: http, publish: %d, mode: host}
  health:
    http: {port: http, path: /healthz}
    interval: 500ms
  resources: {cpus: 0.1, memory: 64MiB}
  stop_grace_period: 2s
restart: {condition: any, delay: 500ms}
`, webPort))
	echoSpec := write("hecho", fmt.Sprintf(`name: hecho
task:
  command: [%s]
  ports:
    - {name: echo, protocol: udp, publish: %d, mode: host}
  resources: {cpus: 0.1, memory: 64MiB}
  stop_grace_period: 2s
restart: {condition: any, delay: 500ms}
`, echoBin, udpPort))
	b := startBerth(t, webSpec, echoSpec)

	// One replica runs on the published port; the other waits, saying why.
	wantReason := fmt.Sprintf("host port tcp/%d is taken on every eligible node", webPort)
	var runningTask api.TaskView
	eventually(t, deployTimeout, func() error {
		views, err := b.psAPI("hweb", false)
		if err != nil {
			return err
		}
		var run, pend []api.TaskView
		for _, v := range views {
			switch {
			case v.State == api.TaskRunning && v.Health == api.HealthHealthy && v.PID > 0:
				run = append(run, v)
			case v.State == api.TaskPending && strings.Contains(v.Message, wantReason):
				pend = append(pend, v)
			}
		}
		if len(views) != 2 || len(run) != 1 || len(pend) != 1 {
			return fmt.Errorf("want 1 running + healthy and 1 pending with %q, got %s (messages %q)", wantReason, summary(views), messages(views))
		}
		if got := run[0].Ports["http"]; got != webPort {
			return fmt.Errorf("running task has port http:%d, want the published %d", got, webPort)
		}
		t.Logf("pending replica: %q", pend[0].Message)
		runningTask = run[0]
		return nil
	})

	// The published port is the task's own socket: the process answering
	// is the running replica (a gateway would have taken the port first,
	// and the task could not have bound it).
	who := whoOn(t, webPort)
	if who.PID != runningTask.PID {
		t.Errorf("port %d answered by pid %d, want the task's pid %d", webPort, who.PID, runningTask.PID)
	}
	if out := b.mustCLI("service", "ps", "hweb"); !strings.Contains(out, "http:"+strconv.Itoa(webPort)) {
		t.Errorf("service ps hweb does not show http:%d:\n%s", webPort, out)
	}
	var svc api.Service
	if err := json.Unmarshal([]byte(b.mustCLI("service", "inspect", "hweb")), &svc); err != nil {
		t.Fatalf("service inspect hweb: %v", err)
	}
	if p := svc.Spec.Task.Ports; len(p) != 1 || p[0].Mode != api.PublishHost || p[0].Publish != webPort {
		t.Errorf("service inspect hweb: ports %+v", p)
	}

	// UDP in host mode: the echo task answers on its published port.
	var echoPID int
	eventually(t, deployTimeout, func() error {
		views, err := b.psAPI("hecho", false)
		if err != nil {
			return err
		}
		if len(views) != 1 || views[0].State != api.TaskRunning || views[0].Ports["echo"] != udpPort {
			return fmt.Errorf("hecho: want 1 running task on udp %d, got %s %v", udpPort, summary(views), views)
		}
		echoPID = views[0].PID
		return nil
	})
	eventually(t, 10*time.Second, func() error {
		reply, err := udpExchange(udpPort, "ping")
		if err != nil {
			return err
		}
		if want := fmt.Sprintf("%d ping", echoPID); reply != want {
			return fmt.Errorf("udp reply %q, want %q", reply, want)
		}
		return nil
	})

	// A second service may not publish the same port, in either mode.
	for _, c := range []struct{ name, ports, want string }{
		{"clash-ingress", fmt.Sprintf("[{name: http, publish: %d}]", webPort), "already published by service hweb"},
		{"clash-host", fmt.Sprintf("[{name: http, publish: %d, mode: host}]", webPort), "already published by service hweb"},
		{"clash-udp", fmt.Sprintf("[{name: q, protocol: udp, publish: %d, mode: host}]", udpPort), "already published by service hecho"},
	} {
		f := write(c.name, fmt.Sprintf("name: %s\ntask:\n  command: [berth, whoami, --port, \"${PORT}\"]\n  ports: %s\n", c.name, c.ports))
		res := b.cli(nil, "deploy", "-f", f)
		checkOneLineError(t, "deploy "+c.name, res, c.want)
		if _, err := b.psAPI(c.name, true); err == nil {
			t.Errorf("%s: the clashing service was stored", c.name)
		}
	}

	// Scaling to one clears the pending replica; the running one stays.
	b.mustCLI("service", "scale", "hweb=1")
	eventually(t, deployTimeout, func() error {
		views, err := b.psAPI("hweb", false)
		if err != nil {
			return err
		}
		if len(views) != 1 || views[0].ID != runningTask.ID || views[0].State != api.TaskRunning {
			return fmt.Errorf("want only task %s running, got %s", shortID(runningTask.ID), summary(views))
		}
		return nil
	})
	if who := whoOn(t, webPort); who.PID != runningTask.PID {
		t.Errorf("after scale: port %d answered by pid %d, want %d", webPort, who.PID, runningTask.PID)
	}

	// No gateway tried to listen on a host-mode port. Had one tried, it
	// would have found the task's socket there (the task binds first: the
	// mesh learns of a task once it runs) and logged its refusal; the pid
	// checks above show the task, not a gateway, holds the ports.
	log, err := os.ReadFile(b.logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "gateway refused") {
			t.Errorf("a gateway tried to serve a port: %s", line)
		}
	}
}

// messages lists the status messages of tasks, for errors.
func messages(views []api.TaskView) []string {
	out := make([]string, len(views))
	for i, v := range views {
		out[i] = v.Message
	}
	return out
}

// whoOn asks whoami on 127.0.0.1:port who answers, retrying for a while.
func whoOn(t *testing.T, port int) who {
	t.Helper()
	var w who
	eventually(t, 10*time.Second, func() error {
		var err error
		w, err = getWho(port)
		return err
	})
	return w
}

// udpExchange sends msg to 127.0.0.1:port and returns the reply.
func udpExchange(port int, msg string) (string, error) {
	c, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
		return "", err
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
