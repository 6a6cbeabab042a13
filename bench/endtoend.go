package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// drainLimit bounds the wait for the backlog after the producers stop.
const drainLimit = 2 * time.Minute

// endToEnd: W producers publish as fast as they can for D while the group
// handles the messages. The library's figure is the handled rate, the
// baseline the producers' commit rate over the same window.
func endToEnd[TTx any](ctx context.Context, cfg *config, out *report, db *database[TTx], br *broker) (result, error) {
	f, err := startFlow(ctx, cfg, db, br)
	if err != nil {
		return result{}, err
	}
	defer func() { _ = f.shutdown() }()
	if _, _, err := closedLoop(ctx, cfg.writers, 0, time.Second, f.publish); err != nil { // warm-up
		return result{}, err
	}
	f.track.hist.reset()
	c0, h0 := f.committed.Load(), f.handled.Load()

	var (
		samples []string
		wg      sync.WaitGroup
		stop    = make(chan struct{})
	)
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				samples = append(samples, fmt.Sprint(f.backlog()))
			}
		}
	})
	cpu := readCPU()
	_, elapsed, err := closedLoop(ctx, cfg.writers, 0, cfg.duration, f.publish)
	c1, h1 := f.committed.Load(), f.handled.Load()
	used := readCPU().since(cpu)
	close(stop)
	wg.Wait()
	if err != nil {
		return result{}, err
	}
	committed := rate(c1-c0, elapsed)
	handled := rate(h1-h0, elapsed)
	out.linef("writers=%d duration=%s", cfg.writers, elapsed.Round(time.Millisecond))
	out.linef("committed: %d = %s msg/s (baseline)", c1-c0, num(committed))
	out.linef("handled:   %d = %s msg/s", h1-h0, num(handled))
	out.linef("backlog (committed, not yet handled) each second: %s", strings.Join(samples, " "))
	out.linef("backlog at the end: %d", c1-h1)
	out.linef("%s", used.format(elapsed))
	out.linef("%s", used.perMessage(h1-h0, "handled message"))
	took, ok := f.drain(ctx, drainLimit)
	out.linef("drained in %s (done=%v)", took.Round(time.Millisecond), ok)
	out.linef("latency commit to handler start: %s", f.track.hist.summary())
	return result{value: handled, baseline: committed, unit: "msg/s"}, nil
}

// latency: a fixed rate for D; the commit-to-handler latency against the
// raw broker's send-to-receive latency at the same rate.
func latency[TTx any](ctx context.Context, cfg *config, out *report, db *database[TTx], br *broker) (result, error) {
	rawFor := min(cfg.duration, 10*time.Second)
	rawStart := readCPU()
	raw, err := br.rawLatency(ctx, cfg.rate, rawFor, cfg.size)
	if err != nil {
		return result{}, fmt.Errorf("baseline: %w", err)
	}
	rawCPU, rawN := readCPU().since(rawStart), raw.count()
	out.linef("baseline (raw send to receive, %s at %d msg/s): %s", rawFor, cfg.rate, raw.summary())

	f, err := startFlow(ctx, cfg, db, br)
	if err != nil {
		return result{}, err
	}
	defer func() { _ = f.shutdown() }()
	if err := pace(ctx, cfg.rate, time.Second, cfg.writers, f.publish); err != nil { // warm-up
		return result{}, err
	}
	if _, ok := f.drain(ctx, 10*time.Second); !ok {
		return result{}, fmt.Errorf("warm-up: backlog of %d not handled within 10s", f.backlog())
	}
	f.track.hist.reset()
	c0, h0 := f.committed.Load(), f.handled.Load()
	start, cpu := time.Now(), readCPU()
	if err := pace(ctx, cfg.rate, cfg.duration, cfg.writers, f.publish); err != nil {
		return result{}, err
	}
	elapsed := time.Since(start)
	used := readCPU().since(cpu)
	c1, h1 := f.committed.Load(), f.handled.Load()
	took, ok := f.drain(ctx, drainLimit)
	out.linef("writers=%d: committed %s msg/s, handled %s msg/s over %s; drained in %s (done=%v)", cfg.writers,
		num(rate(c1-c0, elapsed)), num(rate(h1-h0, elapsed)), elapsed.Round(time.Millisecond), took.Round(time.Millisecond), ok)
	out.linef("%s", used.format(elapsed))
	out.linef("%s", used.perMessage(h1-h0, "handled message"))
	if rawCPU != nil {
		out.linef("baseline %s", rawCPU.perMessage(rawN, "message"))
	}
	h := &f.track.hist
	out.linef("library  (commit to handler start): %s", h.summary())
	out.linef("(the RESULT line compares p99 latencies)")
	return result{value: msOf(h.percentile(99)), baseline: msOf(raw.percentile(99)), unit: "ms"}, nil
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
