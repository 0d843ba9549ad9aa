// Command benchgateway measures Berth's gateway beside HAProxy and nginx:
// the same three whoami backends, the same load generator (wrk), one after
// the other on the same machine. run.sh installs the tools and calls it.
//
//	benchgateway run -berth PATH [-duration 10s] [-rounds 5] [-abba 12] [-out RESULTS.md]
//	benchgateway serve -listen ADDR -backends A,B,C   (the gateway under test)
//
// Every process it starts is stopped by its recorded pid; its temporary
// directory (configs, logs) is removed at the end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/berth-project/berth/internal/gateway"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchgateway run|serve [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "serve":
		err = serveCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want run or serve", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchgateway:", err)
		os.Exit(1)
	}
}

// serveCmd runs the gateway with one route ("/", any host) to the backends
// until SIGTERM or SIGINT.
func serveCmd(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "HTTP entrypoint address")
	backends := fs.String("backends", "", "comma-separated host:port of the backends")
	policy := fs.String("policy", gateway.PolicyRoundRobin, "load-balancing policy")
	accessLog := fs.Bool("access-log", false, "format the access log (JSON), to io.Discard")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file until stopped")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *backends == "" {
		return errors.New("serve: -backends is required")
	}
	opts := gateway.Options{HTTPAddr: *listen, MaxConns: 100000,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if *accessLog {
		opts.AccessLog = slog.New(slog.NewJSONHandler(io.Discard, nil)) // the cost of logging, not of a disk
	}
	g, err := gateway.New(opts)
	if err != nil {
		return err
	}
	defer g.Close()
	var bs []gateway.Backend
	for i, a := range strings.Split(*backends, ",") {
		bs = append(bs, gateway.Backend{ID: fmt.Sprintf("whoami-%d", i+1), Addr: a})
	}
	if err := g.Update(gateway.Config{Routes: []gateway.Route{{Service: "whoami", Path: "/", Backends: bs, Policy: *policy}}}); err != nil {
		return err
	}
	fmt.Printf("gateway listening on %s\n", g.HTTPAddr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	return nil
}
