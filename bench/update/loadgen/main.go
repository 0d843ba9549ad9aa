// Command loadgen sends a steady HTTP load (bench/update/load) to one URL
// until it is interrupted (SIGINT or SIGTERM) and has sent at least -min
// requests, then prints the tally as one JSON object on stdout. The update
// benchmark (bench/update/run.sh) runs it beside each rolling update.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/berth-project/berth/bench/update/load"
)

// result is what loadgen prints.
type result struct {
	Total    int64            `json:"total"`
	Failed   int64            `json:"failed"`
	Seconds  float64          `json:"seconds"`
	ByError  map[string]int64 `json:"by_error"`
	Versions map[string]int64 `json:"versions"`
	Samples  []load.Failure   `json:"samples"`
}

func main() {
	url := flag.String("url", "", "URL to load (POST, no body)")
	host := flag.String("host", "", "Host header (for an HTTP route)")
	ka := flag.Int("keepalive", 2, "workers on keep-alive connections")
	nc := flag.Int("newconn", 4, "workers on a new connection per request")
	minReq := flag.Int64("min", 100000, "keep going after the interrupt until this many requests were sent")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url is required")
		os.Exit(2)
	}
	g := load.New(load.Config{URL: *url, Host: *host, KeepAlive: *ka, NewConn: *nc})
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		for g.Snapshot().Total < *minReq {
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
	}()
	st := g.Run(ctx)
	out := result{Total: st.Total, Failed: st.Failed, Seconds: st.Ended.Sub(st.Started).Seconds(),
		ByError: st.ByError, Versions: map[string]int64{}, Samples: st.Samples}
	for v, s := range st.Versions {
		out.Versions[v] = s.Count
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}
