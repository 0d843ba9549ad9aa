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
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], osEnv())
	stop()
	os.Exit(code)
}
