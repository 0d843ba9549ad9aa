package process_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/berth-project/berth/internal/driver"
	"github.com/berth-project/berth/internal/driver/drivertest"
	"github.com/berth-project/berth/internal/driver/process"
)

// BenchmarkStartStopWithLog is BenchmarkStartStop (without cgroups) for a
// task with a log file, as the agent starts every task: what the log's
// capping and time index (ADR 0034) add to a start and a stop. It reports
// the start and the stop apart.
func BenchmarkStartStopWithLog(b *testing.B) {
	prog := drivertest.HelperBinary(b)
	d, err := process.New(process.Config{NoCgroups: true})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	ctx := context.Background()
	var start, stop time.Duration
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		hd, err := d.Start(ctx, driver.StartSpec{TaskID: fmt.Sprint("b", i), Command: []string{prog, "forever"}, LogDir: dir, LogMaxBytes: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := hd.Stop(ctx, time.Second); err != nil {
			b.Fatal(err)
		}
		start += t1.Sub(t0)
		stop += time.Since(t1)
	}
	b.ReportMetric(float64(start.Microseconds())/float64(b.N), "µs-start/op")
	b.ReportMetric(float64(stop.Microseconds())/float64(b.N), "µs-stop/op")
}
