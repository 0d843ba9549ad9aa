package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	out := `Running 15s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.20ms    3.10ms  60.12ms   90.00%
    Req/Sec     7.10k     1.20k   9.80k    70.00%
  Latency Distribution
     50%    3.29ms
     75%    4.80ms
     90%    7.10ms
     99%   10.40ms
  266728 requests in 15.07s, 40.20MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  17704.12
Transfer/sec:      2.67MB
`
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.rps != 17704.12 || r.p50 != 3290*time.Microsecond || r.p99 != 10400*time.Microsecond || r.requests != 266728 || r.errors != 7 {
		t.Fatalf("parsed %+v", r)
	}
	if _, err := parseWrk("garbage"); err == nil {
		t.Fatal("garbage parsed")
	}
}

func TestPairedRatios(t *testing.T) {
	rs := []result{{rps: 100}, {rps: 90}, {rps: 120}, {rps: 50}}
	ref := []result{{rps: 100}, {rps: 100}, {rps: 100}, {rps: 0}}
	got := pairedRatios(rs, ref)
	if len(got) != 3 || got[0] != 1 || got[1] != 0.9 || got[2] != 1.2 {
		t.Fatalf("pairedRatios = %v", got)
	}
	if m := medianFloat(got); m != 1 {
		t.Fatalf("median of %v = %v, want 1", got, m)
	}
	if m := medianFloat([]float64{1, 2, 3, 4}); m != 2.5 {
		t.Fatalf("median of an even count = %v, want 2.5", m)
	}
}

func TestABBA(t *testing.T) {
	blk := abbaBlock{berth: [2]result{{rps: 110, p99: 10}, {rps: 90, p99: 30}}, hap: [2]result{{rps: 100, p99: 20}, {rps: 100, p99: 20}}}
	if r := blk.ratio(); r != 1 {
		t.Fatalf("ratio = %v, want 1", r)
	}
	if r := blk.p99Ratio(); r != 1 {
		t.Fatalf("p99 ratio = %v, want 1", r)
	}
	// 10 of 12 is significant at 5 %; 7 of 12 is not; 6 of 12 is p = 1.
	if p := signTest(10, 12); p < 0.03 || p > 0.04 {
		t.Fatalf("signTest(10, 12) = %v, want 0.039", p)
	}
	if p := signTest(7, 12); p < 0.7 || p > 0.8 {
		t.Fatalf("signTest(7, 12) = %v, want 0.774", p)
	}
	if p := signTest(6, 12); p != 1 {
		t.Fatalf("signTest(6, 12) = %v, want 1", p)
	}
	rep := abbaReport([]abbaBlock{blk, blk}, time.Second)
	if !strings.Contains(rep, "Berth ahead in 0 of 2") {
		t.Fatalf("report:\n%s", rep)
	}
}
