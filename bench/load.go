package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// pace calls op rate times a second for d, from workers goroutines. The
// schedule is fixed in advance (open loop): when op falls behind, calls
// queue up (one second's worth at most) and run as soon as a worker is
// free, so a slow moment shows as latency rather than as fewer calls. It
// returns the first error of op.
func pace(ctx context.Context, rate int, d time.Duration, workers int, op func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tokens := make(chan struct{}, max(rate, 1))
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for range workers {
		wg.Go(func() {
			for range tokens {
				if err := op(ctx); err != nil {
					errOnce.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	total := int64(d / interval)
loop:
	for i := int64(0); i < total; i++ {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		select {
		case tokens <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
	}
	close(tokens)
	wg.Wait()
	if first != nil {
		return first
	}
	return context.Cause(ctx)
}

// closedLoop runs op from workers goroutines, each as fast as it can, until
// n calls succeeded (n > 0) or d passed. It returns the successful calls and
// the time until the last worker stopped.
func closedLoop(ctx context.Context, workers int, n int64, d time.Duration, op func(context.Context) error) (int64, time.Duration, error) {
	var (
		done    atomic.Int64
		started atomic.Int64
		stop    atomic.Bool
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	start := time.Now()
	if n <= 0 {
		t := time.AfterFunc(d, func() { stop.Store(true) })
		defer t.Stop()
	}
	for range workers {
		wg.Go(func() {
			for !stop.Load() && ctx.Err() == nil {
				if n > 0 && started.Add(1) > n {
					return
				}
				if err := op(ctx); err != nil {
					errOnce.Do(func() { first = err })
					stop.Store(true)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if first == nil {
		first = ctx.Err()
	}
	return done.Load(), elapsed, first
}
