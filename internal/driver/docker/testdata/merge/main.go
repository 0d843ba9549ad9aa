// Command merge runs its arguments (argv[1] an absolute path) with stderr
// made a copy of stdout, so that both reach the engine through one pipe, in
// the order written. The Docker Engine reads a container's stdout and
// stderr through separate pipes and cannot order lines across them; the
// conformance suite's log cases check that order, so the docker driver's
// tests run them under merge (see TestConformance).
package main

import (
	"fmt"
	"os"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: merge PROGRAM [ARG...]")
		os.Exit(100)
	}
	if err := syscall.Dup3(1, 2, 0); err != nil {
		fmt.Fprintln(os.Stderr, "merge:", err)
		os.Exit(100)
	}
	err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
	fmt.Fprintln(os.Stderr, "merge:", err)
	os.Exit(127)
}
