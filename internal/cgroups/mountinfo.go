package cgroups

import (
	"fmt"
	"io"
	"strings"

	"github.com/moby/sys/mountinfo"
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
// mountinfo file (proc(5)), in file order. The parsing (fields, the " - "
// separator, octal escapes) is github.com/moby/sys/mountinfo's, the parser
// runc and containerd use; this keeps only what choosing a hierarchy needs
// (ADR 0037).
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	infos, err := mountinfo.GetMountsFromReader(r, mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return nil, fmt.Errorf("cgroups: reading mountinfo: %w", err)
	}
	var mounts []Mount
	for _, in := range infos {
		m := Mount{Mountpoint: in.Mountpoint, Root: in.Root, Version: V2}
		if in.FSType == "cgroup" {
			m.Version = V1
			for _, opt := range strings.Split(in.VFSOptions, ",") {
				if v1Controllers[opt] {
					m.Controllers = append(m.Controllers, opt)
				}
			}
		}
		mounts = append(mounts, m)
	}
	return mounts, nil
}
