//go:build unix

package scheduler

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time the process has used, all threads: unlike wall
// time it does not grow while other processes hold the CPUs.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
