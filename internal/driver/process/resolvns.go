package process

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"github.com/berth-project/berth/internal/driver"
)

// A process task with a resolver (StartSpec.DNS) gets its own
// /etc/resolv.conf without a process of Berth's own in between: the driver
// keeps one OS thread per resolver that has left the host's mount
// namespace (unshare(CLONE_NEWNS) acts on the calling thread only) and has
// the resolver's file bind-mounted, read-only, over /etc/resolv.conf in its
// copy of the mount table. Tasks with that resolver are forked from that
// thread, and a child starts in its parent thread's mount namespace. The
// rest of the agent, and the host, keep the host's file; the thread is
// locked and never unlocked, so no other goroutine ever runs on it, and it
// lasts as long as the agent process (one per resolver: one in practice).

// resolvConfPath is the file a task's resolver replaces.
const resolvConfPath = "/etc/resolv.conf"

// resolvConf renders a resolv.conf for dns.
func resolvConf(dns driver.Resolver) string {
	var b strings.Builder
	b.WriteString("# Written by Berth for its tasks: the node agent's DNS server.\n")
	for _, s := range dns.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(dns.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Search, " "))
	}
	return b.String()
}

// nsThread runs functions on an OS thread in a mount namespace of its own.
type nsThread struct {
	fns chan func()
}

// newNSThread starts a thread, moves it to a new mount namespace (a slave
// of the host's: mounts made on the host later still show, none made here
// leave) and mounts a file holding content over /etc/resolv.conf there.
func newNSThread(content string) (*nsThread, error) {
	t := &nsThread{fns: make(chan func())}
	ready := make(chan error, 1)
	go t.run(content, ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return t, nil
}

// run locks a thread other than the process's main one (whose view
// /proc/<pid> shows, to the agent itself and to anyone looking at it) and
// serves on it.
func (t *nsThread) run(content string, ready chan<- error) {
	runtime.LockOSThread()
	if syscall.Gettid() == syscall.Getpid() {
		// The main thread: hand over to a goroutine that locks another
		// one. This goroutine holds the main thread until then, so that
		// one cannot be it.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			t.serve(content, ready)
		}()
		<-locked
		runtime.UnlockOSThread()
		return
	}
	t.serve(content, ready)
}

// serve changes the locked thread for good and runs functions on it. It
// never unlocks the thread: Go ends a thread whose goroutine exits while
// locked, so no other goroutine ever runs in the namespace.
func (t *nsThread) serve(content string, ready chan<- error) {
	if err := enterResolvNamespace(content); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for fn := range t.fns {
		fn()
	}
}

// do runs fn on the thread and waits for it.
func (t *nsThread) do(fn func()) {
	done := make(chan struct{})
	t.fns <- func() { defer close(done); fn() }
	<-done
}

// enterResolvNamespace is run by a locked thread: after it, the thread and
// every process it forks see content as /etc/resolv.conf.
func enterResolvNamespace(content string) error {
	if _, err := os.Stat(resolvConfPath); err != nil {
		return fmt.Errorf("process: %w", err) // nothing to mount over
	}
	if err := syscall.Unshare(syscall.CLONE_NEWNS); err != nil {
		return fmt.Errorf("process: a mount namespace for task resolvers: unshare: %w", err)
	}
	// From here on the thread is in its own namespace: nothing below can
	// reach the host's mount table.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("process: a mount namespace for task resolvers: %w", err)
	}
	f, err := os.CreateTemp("", "berth-resolv-*.conf")
	if err != nil {
		return fmt.Errorf("process: %w", err)
	}
	name := f.Name()
	defer os.Remove(name) // the mount keeps the file
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(name, 0o644)
	}
	if err != nil {
		return fmt.Errorf("process: %w", err)
	}
	if err := syscall.Mount(name, resolvConfPath, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("process: bind-mount %s: %w", resolvConfPath, err)
	}
	if err := syscall.Mount("", resolvConfPath, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("process: read-only %s: %w", resolvConfPath, err)
	}
	return nil
}

// resolverThreads keeps one nsThread per resolv.conf content.
type resolverThreads struct {
	mu      sync.Mutex
	threads map[string]*nsThread
	failed  map[string]error
}

// get returns the thread for dns, starting it on first use. A resolver
// whose namespace could not be made is remembered, and its error returned
// again.
func (r *resolverThreads) get(dns driver.Resolver) (*nsThread, error) {
	content := resolvConf(dns)
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.threads[content]; t != nil {
		return t, nil
	}
	if err := r.failed[content]; err != nil {
		return nil, err
	}
	t, err := newNSThread(content)
	if err != nil {
		if r.failed == nil {
			r.failed = map[string]error{}
		}
		r.failed[content] = err
		return nil, err
	}
	if r.threads == nil {
		r.threads = map[string]*nsThread{}
	}
	r.threads[content] = t
	return t, nil
}
