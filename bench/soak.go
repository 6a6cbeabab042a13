package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

// memSample is the process's memory at one moment.
type memSample struct {
	at      time.Duration
	heap    uint64 // live heap after a collection
	rss     uint64
	backlog int64
}

// sampleMemory collects garbage first, so that heap is the live heap and
// samples compare.
func sampleMemory() (heap, rss uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, residentBytes()
}

// residentBytes reads the resident set size from /proc; zero where there is
// none.
func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// soak: a fixed rate for D, sampling memory every -sample. The RESULT
// compares the live heap at the end with the live heap at the first sample
// after one period of load (the warm-up).
func soak[TTx any](ctx context.Context, cfg *config, out *report, db *database[TTx], br *broker) (result, error) {
	f, err := startFlow(ctx, cfg, db, br)
	if err != nil {
		return result{}, err
	}
	defer func() { _ = f.shutdown() }()

	start := time.Now()
	load := make(chan error, 1)
	go func() { load <- pace(ctx, cfg.rate, cfg.duration, cfg.writers, f.publish) }()

	var samples []memSample
	take := func() {
		heap, rss := sampleMemory()
		s := memSample{at: time.Since(start), heap: heap, rss: rss, backlog: f.backlog()}
		samples = append(samples, s)
		out.linef("t=%-6s heap=%-9s rss=%-9s committed=%d handled=%d backlog=%d", s.at.Round(time.Second),
			mb(s.heap), mb(s.rss), f.committed.Load(), f.handled.Load(), s.backlog)
	}
	out.linef("rate=%d msg/s writers=%d duration=%s sample=%s", cfg.rate, cfg.writers, cfg.duration, cfg.sample)
	take()
	cpu, h0 := readCPU(), f.handled.Load()
	tick := time.NewTicker(cfg.sample)
	defer tick.Stop()
	var loadErr error
wait:
	for {
		select {
		case <-tick.C:
			take()
		case loadErr = <-load:
			break wait
		}
	}
	if loadErr != nil {
		return result{}, loadErr
	}
	took, ok := f.drain(ctx, drainLimit)
	out.linef("drained in %s (done=%v)", took.Round(time.Millisecond), ok)
	out.linef("%s", readCPU().since(cpu).perMessage(f.handled.Load()-h0, "handled message"))
	take()
	if len(samples) < 3 {
		return result{}, fmt.Errorf("-duration %s holds fewer than two -sample periods of %s", cfg.duration, cfg.sample)
	}
	first, last := samples[1], samples[len(samples)-1]
	var maxHeap, maxRSS uint64
	for _, s := range samples[1:] {
		maxHeap, maxRSS = max(maxHeap, s.heap), max(maxRSS, s.rss)
	}
	out.linef("heap: start %s end %s max %s (start is t=%s, after one period of load)", mb(first.heap), mb(last.heap),
		mb(maxHeap), first.at.Round(time.Second))
	out.linef("rss:  start %s end %s max %s", mb(first.rss), mb(last.rss), mb(maxRSS))
	out.linef("latency commit to handler start: %s", f.track.hist.summary())
	out.linef("(the RESULT line compares the live heap at the end with the one at the start)")
	return result{value: float64(last.heap) / (1 << 20), baseline: float64(first.heap) / (1 << 20), unit: "MiB"}, nil
}
