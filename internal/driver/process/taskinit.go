package process

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/berth-project/berth/internal/driver"
)

// A process task with a resolver (StartSpec.DNS) is started through the
// task init: the Berth binary run as "berth task-init" (Config.InitPath),
// in a mount namespace of its own (the driver unshares it at fork, which
// also makes every mount private to it). The init writes the task's
// resolv.conf, bind-mounts it read-only over /etc/resolv.conf, drops to the
// task's user and execs the task's program in its own place: same pid,
// process group and cgroups, as if the driver had started it directly.
// The host's /etc/resolv.conf and every other process keep theirs.

// InitArg is the argument that makes the Berth binary run TaskInit.
const InitArg = "task-init"

// resolvConfPath is the file a task's resolver replaces.
const resolvConfPath = "/etc/resolv.conf"

// initArgs is the command line of the task init for a task: its resolver,
// its credentials, then "--" and the task's command.
func initArgs(initPath string, dns driver.Resolver, cred *syscall.Credential, command []string) []string {
	args := []string{initPath, InitArg}
	for _, s := range dns.Servers {
		args = append(args, "-nameserver", s)
	}
	for _, s := range dns.Search {
		args = append(args, "-search", s)
	}
	if cred != nil {
		groups := make([]string, len(cred.Groups))
		for i, g := range cred.Groups {
			groups[i] = strconv.FormatUint(uint64(g), 10)
		}
		args = append(args, "-uid", strconv.FormatUint(uint64(cred.Uid), 10), "-gid", strconv.FormatUint(uint64(cred.Gid), 10),
			"-groups", strings.Join(groups, ","))
	}
	return append(append(args, "--"), command...)
}

// resolvConf renders a resolv.conf for dns.
func resolvConf(dns driver.Resolver) string {
	var b strings.Builder
	b.WriteString("# Written by Berth for this task: the node agent's DNS server.\n")
	for _, s := range dns.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(dns.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Search, " "))
	}
	return b.String()
}

// TaskInit is "berth task-init": it runs in the task's new process, gives
// it its resolv.conf and execs its program. It returns only on failure,
// with the error to report (the caller prints it and exits 127, as a shell
// does for a program it cannot run).
func TaskInit(args []string) error {
	fs := flag.NewFlagSet(InitArg, flag.ContinueOnError)
	var dns driver.Resolver
	fs.Func("nameserver", "name server address (repeatable)", func(s string) error {
		dns.Servers = append(dns.Servers, s)
		return nil
	})
	fs.Func("search", "search domain (repeatable)", func(s string) error {
		dns.Search = append(dns.Search, s)
		return nil
	})
	uid := fs.Int64("uid", -1, "user id to run the program as")
	gid := fs.Int64("gid", -1, "group id to run the program as")
	groups := fs.String("groups", "", "supplementary group ids, comma-separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return errors.New("task-init: no command after --")
	}
	if len(dns.Servers) > 0 {
		if err := ownMountNamespace(); err != nil {
			return err
		}
		if err := mountResolvConf(resolvConf(dns)); err != nil {
			return err
		}
	}
	if *uid >= 0 {
		var gs []int
		if *groups != "" {
			for _, g := range strings.Split(*groups, ",") {
				n, err := strconv.Atoi(g)
				if err != nil {
					return fmt.Errorf("task-init: bad group id %q", g)
				}
				gs = append(gs, n)
			}
		}
		if err := syscall.Setgroups(gs); err != nil {
			return fmt.Errorf("task-init: setgroups: %w", err)
		}
		if err := syscall.Setgid(int(*gid)); err != nil {
			return fmt.Errorf("task-init: setgid %d: %w", *gid, err)
		}
		if err := syscall.Setuid(int(*uid)); err != nil {
			return fmt.Errorf("task-init: setuid %d: %w", *uid, err)
		}
	}
	err := syscall.Exec(argv[0], argv, os.Environ())
	return fmt.Errorf("task-init: exec %s: %w", argv[0], err)
}

// ownMountNamespace makes sure the init does not run in its parent's mount
// namespace (the driver unshares it at fork): a mount there would replace
// the host's resolv.conf for everyone.
func ownMountNamespace() error {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return fmt.Errorf("task-init: %w", err)
	}
	parent, err := os.Readlink("/proc/" + strconv.Itoa(os.Getppid()) + "/ns/mnt")
	if err != nil {
		return fmt.Errorf("task-init: %w", err)
	}
	if self == parent {
		return fmt.Errorf("task-init: refusing to mount %s in the mount namespace of its parent (pid %d); "+
			"the process driver starts it in one of its own", resolvConfPath, os.Getppid())
	}
	return nil
}

// mountResolvConf bind-mounts a file holding content over /etc/resolv.conf,
// read-only. The file is removed at once: the mount keeps it.
func mountResolvConf(content string) error {
	if _, err := os.Stat(resolvConfPath); errors.Is(err, os.ErrNotExist) {
		// The host has no resolver file to stand in for: say so in the
		// task's log and go on without one.
		fmt.Fprintf(os.Stderr, "berth task-init: %s does not exist on this host; the task gets no resolver\n", resolvConfPath)
		return nil
	}
	f, err := os.CreateTemp("", "berth-resolv-*.conf")
	if err != nil {
		return fmt.Errorf("task-init: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(name, 0o644)
	}
	if err != nil {
		return fmt.Errorf("task-init: %w", err)
	}
	if err := syscall.Mount(name, resolvConfPath, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("task-init: bind-mount %s: %w", resolvConfPath, err)
	}
	if err := syscall.Mount("", resolvConfPath, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("task-init: read-only %s: %w", resolvConfPath, err)
	}
	return nil
}
