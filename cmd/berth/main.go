// Command berth is the Berth binary: the CLI client of the Berth API and,
// through commands added by other files, the manager and the agent. main
// only wires the process (arguments, standard streams, signals) to run.
//
// The client commands talk to Berth only through the public api package:
// they must not import internal/ (whoami.go, which runs a test app rather
// than calling the API, is the one exception).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// forceExitAfter bounds a graceful stop: the agent gives its tasks 60 s
// and the manager 30 s more. Past it the process exits anyway: a Berth
// process always stops on SIGINT or SIGTERM.
const forceExitAfter = 2 * time.Minute

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go stopOnSignals(sigs, cancel, forceExitAfter, os.Stderr, os.Exit)
	code := run(ctx, os.Args[1:], osEnv())
	signal.Stop(sigs)
	cancel()
	os.Exit(code)
}

// stopOnSignals cancels the command's context at the first signal, so it
// stops gracefully; a second signal, or a graceful stop that takes longer
// than grace, ends the process at once (exit code 130, or 1).
func stopOnSignals(sigs <-chan os.Signal, cancel context.CancelFunc, grace time.Duration, stderr interface{ WriteString(string) (int, error) }, exit func(int)) {
	<-sigs
	cancel()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case sig := <-sigs:
		_, _ = stderr.WriteString(fmt.Sprintf("berth: %v again: exiting without waiting\n", sig))
		exit(130)
	case <-t.C:
		_, _ = stderr.WriteString(fmt.Sprintf("berth: still stopping after %s: exiting\n", grace))
		exit(1)
	}
}
