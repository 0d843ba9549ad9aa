// Command testprog is the program the driver conformance suite runs as a
// task. It carries out its arguments as a script of actions, in order, so a
// test can compose behaviours without a shell (a task's environment is
// exactly what the test gives, so there may be no PATH):
//
//	print TEXT       write TEXT and a newline to the output (stdout)
//	eprint TEXT      write TEXT and a newline to stderr
//	lines N          print "line 1" ... "line N"
//	to FILE          send later output to FILE (created); "to -" goes back to stdout
//	env              print "env KEY=VALUE" for each environment variable
//	pwd              print "pwd DIR"
//	cgroup           print "cgroup LINE" for each line of /proc/self/cgroup
//	ids              print "ids UID GID G1,G2,..." (supplementary groups sorted)
//	read FILE        print "read FILE: ok" if FILE can be read, else the error
//	signal PID       print "signal PID: ok" if PID may be signalled (signal 0)
//	caps             print "caps CapXxx HEX" for each capability set
//	ignore-term      ignore SIGTERM from now on
//	term-exit N      on SIGTERM, print "got SIGTERM" and exit with code N
//	child FILE       start a copy of this program, in this process group, that
//	                 ignores SIGTERM and sleeps forever; it writes its pid to FILE
//	child-setsid FILE  the same in a new session (it leaves the process group)
//	pidfile FILE     write this process's pid to FILE
//	touch FILE       create FILE (a test waits for it to know a point was reached)
//	wait-file FILE   wait until FILE exists
//	alloc BYTES      allocate BYTES of memory and touch every page
//	burn DURATION    spin until this process has used DURATION of CPU time
//	                 (Go syntax: 300ms), however long that takes
//	sleep DURATION   sleep
//	forever          sleep forever
//	exit N           exit with code N
//
// Files it writes appear atomically (written then renamed). With no more
// actions it exits 0. A bad script exits 100.
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// keep holds allocated memory so it is not collected.
var keep [][]byte

func main() {
	args := os.Args[1:]
	var out io.Writer = os.Stdout
	next := func() string {
		if len(args) == 0 {
			fail("missing argument")
		}
		a := args[0]
		args = args[1:]
		return a
	}
	for len(args) > 0 {
		switch action := next(); action {
		case "print":
			fmt.Fprintln(out, next())
		case "eprint":
			fmt.Fprintln(os.Stderr, next())
		case "lines":
			n := atoi(next())
			for i := 1; i <= n; i++ {
				fmt.Fprintf(out, "line %d\n", i)
			}
		case "to":
			name := next()
			if name == "-" {
				out = os.Stdout
				continue
			}
			f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o666)
			if err != nil {
				fail(err.Error())
			}
			out = f
		case "env":
			for _, kv := range os.Environ() {
				fmt.Fprintf(out, "env %s\n", kv)
			}
		case "pwd":
			wd, err := os.Getwd()
			if err != nil {
				fail(err.Error())
			}
			fmt.Fprintf(out, "pwd %s\n", wd)
		case "ids":
			groups, err := os.Getgroups()
			if err != nil {
				fail(err.Error())
			}
			slices.Sort(groups)
			gs := ""
			for i, g := range groups {
				if i > 0 {
					gs += ","
				}
				gs += strconv.Itoa(g)
			}
			fmt.Fprintf(out, "ids %d %d %s\n", os.Getuid(), os.Getgid(), gs)
		case "read":
			// Whether the file can be read, never what it holds.
			name := next()
			if _, err := os.ReadFile(name); err != nil {
				fmt.Fprintf(out, "read %s: %v\n", name, err)
			} else {
				fmt.Fprintf(out, "read %s: ok\n", name)
			}
		case "signal":
			pid := atoi(next())
			if err := syscall.Kill(pid, 0); err != nil {
				fmt.Fprintf(out, "signal %d: %v\n", pid, err)
			} else {
				fmt.Fprintf(out, "signal %d: ok\n", pid)
			}
		case "caps":
			b, err := os.ReadFile("/proc/self/status")
			if err != nil {
				fail(err.Error())
			}
			for _, line := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.HasPrefix(k, "Cap") {
					fmt.Fprintf(out, "caps %s %s\n", k, strings.TrimSpace(v))
				}
			}
		case "cgroup":
			b, err := os.ReadFile("/proc/self/cgroup")
			if err != nil {
				fail(err.Error())
			}
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				fmt.Fprintf(out, "cgroup %s\n", line)
			}
		case "ignore-term":
			signal.Ignore(syscall.SIGTERM)
		case "term-exit":
			code := atoi(next())
			ch := make(chan os.Signal, 1)
			signal.Notify(ch, syscall.SIGTERM)
			go func() {
				<-ch
				fmt.Fprintln(out, "got SIGTERM")
				os.Exit(code)
			}()
		case "child", "child-setsid":
			file := next()
			self, err := os.Executable()
			if err != nil {
				fail(err.Error())
			}
			p, err := os.StartProcess(self, []string{self, "ignore-term", "pidfile", file, "forever"}, &os.ProcAttr{
				Env:   os.Environ(),
				Files: []*os.File{nil, os.Stdout, os.Stderr},
				Sys:   &syscall.SysProcAttr{Setsid: action == "child-setsid"},
			})
			if err != nil {
				fail(err.Error())
			}
			_ = p.Release()
		case "pidfile":
			writeFile(next(), strconv.Itoa(os.Getpid()))
		case "touch":
			writeFile(next(), "")
		case "wait-file":
			name := next()
			for {
				if _, err := os.Stat(name); err == nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		case "alloc":
			n := atoi(next())
			b := make([]byte, n)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
		case "burn":
			d := duration(next())
			x := 0
			for start := cpuTime(); cpuTime()-start < d; {
				for i := 0; i < 100000; i++ {
					x += i
				}
			}
			_ = x
		case "sleep":
			time.Sleep(duration(next()))
		case "forever":
			for {
				time.Sleep(time.Hour)
			}
		case "exit":
			os.Exit(atoi(next()))
		default:
			fail("unknown action " + strconv.Quote(action))
		}
	}
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		fail(err.Error())
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func writeFile(name, content string) {
	tmp := filepath.Join(filepath.Dir(name), "."+filepath.Base(name)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o666); err != nil {
		fail(err.Error())
	}
	if err := os.Rename(tmp, name); err != nil {
		fail(err.Error())
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		fail(err.Error())
	}
	return n
}

func duration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		fail(err.Error())
	}
	return d
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "testprog:", msg)
	os.Exit(100)
}
