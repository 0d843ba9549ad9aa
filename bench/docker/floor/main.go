// Command floor measures the Docker Engine's own floor for starting N
// containers: N ContainerCreate + ContainerStart calls through the Go client,
// all at once, with nothing else (no orchestrator, no CLI process per
// container). bench/docker/run.sh runs it beside Berth, Swarm and a `docker
// run` loop, so that each can be read against what the engine alone needs.
//
// Usage: go run ./bench/docker/floor -image IMAGE -n 50 -label KEY=VALUE
// It prints the seconds from the first call to N running containers (the
// same criterion as run.sh) and leaves the containers for the caller to
// remove by label.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
)

func main() {
	img := flag.String("image", "", "image to run")
	n := flag.Int("n", 50, "containers")
	label := flag.String("label", "berth-bench=floor", "KEY=VALUE label on every container")
	conc := flag.Int("concurrency", 0, "calls in flight at once (0: all)")
	hardened := flag.Bool("hardened", false, "create the containers as Berth's docker driver does by default (read-only root, all capabilities dropped, no-new-privileges, an init process, user nobody, capped json-file logs)")
	flag.Parse()
	if err := run(*img, *n, *label, *conc, *hardened); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(img string, n int, label string, conc int, hardened bool) error {
	k, v, ok := strings.Cut(label, "=")
	if img == "" || !ok || n < 1 {
		return fmt.Errorf("need -image, -n ≥ 1 and -label KEY=VALUE")
	}
	if conc <= 0 {
		conc = n
	}
	ctx := context.Background()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer cli.Close()
	cfg := &container.Config{Image: img, Env: []string{"PORT=8080"}, Labels: map[string]string{k: v}}
	hc := &container.HostConfig{}
	if hardened {
		// The defaults of internal/driver/docker (config.go), written out
		// here because this program uses the public client only.
		yes := true
		cfg.User = "65534:65534"
		hc = &container.HostConfig{
			ReadonlyRootfs: true, CapDrop: []string{"ALL"}, SecurityOpt: []string{"no-new-privileges"},
			IpcMode: container.IPCModePrivate, Init: &yes,
			LogConfig: container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "33554432", "max-file": "2"}},
		}
	}
	sem := make(chan struct{}, conc)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	t0 := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := cli.ContainerCreate(ctx, cfg, hc, nil, nil, "")
			if err == nil {
				err = cli.ContainerStart(ctx, c.ID, container.StartOptions{})
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	// Running by the engine's own list, as run.sh counts the other ways.
	f := filters.NewArgs(filters.Arg("label", label), filters.Arg("status", "running"))
	for deadline := time.Now().Add(5 * time.Minute); ; {
		cs, err := cli.ContainerList(ctx, container.ListOptions{Filters: f})
		if err != nil {
			return err
		}
		if len(cs) >= n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d running after 5 minutes", len(cs), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("%.2f\n", time.Since(t0).Seconds())
	return nil
}
