package cgroups

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Mount is one cgroup filesystem from /proc/self/mountinfo.
type Mount struct {
	// Mountpoint is where the hierarchy is mounted, unescaped.
	Mountpoint string
	// Root is the cgroup the mount shows at its mountpoint ("/" unless the
	// mount is a bind of a sub-tree or lives in a cgroup namespace).
	Root string
	// Version is V1 for "cgroup" and V2 for "cgroup2".
	Version Version
	// Controllers are the v1 controllers bound to this hierarchy ("cpu",
	// "cpuacct", ...) taken from the super options; named hierarchies
	// (name=systemd) have none. Empty for V2.
	Controllers []string
}

// v1Controllers are the super options of a cgroup v1 mount that are
// controllers; any other option (rw, name=..., noprefix, ...) is not.
var v1Controllers = map[string]bool{
	"cpu": true, "cpuacct": true, "cpuset": true, "memory": true, "pids": true,
	"blkio": true, "devices": true, "freezer": true, "net_cls": true,
	"net_prio": true, "perf_event": true, "hugetlb": true, "rdma": true, "misc": true,
}

// ParseMountInfo returns the cgroup and cgroup2 mounts listed in a
// mountinfo file (proc(5)), in file order.
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	var mounts []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if strings.TrimSpace(text) == "" {
			continue
		}
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		pre, post, ok := strings.Cut(text, " - ")
		if !ok {
			return nil, fmt.Errorf("cgroups: mountinfo line %d: no separator", line)
		}
		pf := strings.Fields(pre)
		sf := strings.Fields(post)
		if len(pf) < 6 || len(sf) < 1 {
			return nil, fmt.Errorf("cgroups: mountinfo line %d: too few fields", line)
		}
		var m Mount
		switch sf[0] {
		case "cgroup":
			m.Version = V1
		case "cgroup2":
			m.Version = V2
		default:
			continue
		}
		m.Root = unescape(pf[3])
		m.Mountpoint = unescape(pf[4])
		if m.Version == V1 && len(sf) >= 3 {
			for _, opt := range strings.Split(sf[2], ",") {
				if v1Controllers[opt] {
					m.Controllers = append(m.Controllers, opt)
				}
			}
		}
		mounts = append(mounts, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cgroups: reading mountinfo: %w", err)
	}
	return mounts, nil
}

// unescape undoes the octal escapes (\040 for a space, \011, \012, \134)
// that the kernel uses in mountinfo paths.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
