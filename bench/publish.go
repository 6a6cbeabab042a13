package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage"
)

// publishOverhead: W writers commit business transactions of one order row
// plus PublishTx (the library) or plus a plain insert of a row as large as
// the outbox row (the baseline). -mode says how the library publishes:
//
//	intx     the bus runs; the transaction is bus.InTx, which hands the row
//	         to the dispatcher after the commit (the documented way);
//	commit   the bus runs; the writer begins and commits the transaction
//	         itself, so the row is found through the storage's NOTIFY (or
//	         its poll) and claimed;
//	stopped  the bus is not started: the cost of the transaction alone.
func publishOverhead[TTx any](ctx context.Context, cfg *config, out *report, db *database[TTx], br *broker) (result, error) {
	sent := newCounting(br.tr)
	bus, err := newBus(cfg, db, sent, br)
	if err != nil {
		return result{}, err
	}
	pad := padFor(cfg.size)
	contentLen, err := contentLength(ctx, db, bus, pad)
	if err != nil {
		return result{}, err
	}
	plainBody := strings.Repeat("x", contentLen)
	running := cfg.mode != "stopped"
	if running {
		if _, err := br.sink(ctx, "sink", topic); err != nil {
			return result{}, err
		}
		if err := bus.Start(ctx); err != nil {
			return result{}, err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_ = bus.Shutdown(sctx)
		}()
	}

	var seq atomic.Int64
	work := func(ctx context.Context, tx TTx) error {
		if err := db.execTx(ctx, tx, db.insertOrder, db.nextID(), "customer", 42); err != nil {
			return err
		}
		return bus.PublishTx(ctx, tx, topic, payload{Seq: seq.Add(1), Pad: pad})
	}
	library := func(ctx context.Context) error {
		if cfg.mode == "intx" {
			return bus.InTx(ctx, work)
		}
		return db.inTx(ctx, func(tx TTx) error { return work(ctx, tx) })
	}
	baseline := func(ctx context.Context) error {
		return db.inTx(ctx, func(tx TTx) error {
			if err := db.execTx(ctx, tx, db.insertOrder, db.nextID(), "customer", 42); err != nil {
				return err
			}
			return db.execTx(ctx, tx, db.insertPlain, db.nextID(), plainBody)
		})
	}
	// The phases alternate in rounds, baseline first in odd rounds and the
	// library first in even ones, so that what drifts during a run (the
	// tables grow, checkpoints, autovacuum) weighs on both alike.
	type tally struct {
		n       int64
		elapsed time.Duration
		cpu     cpuUse
	}
	var base, lib tally
	// With the bus running, a library phase lasts until the broker has
	// every message it published (the dispatcher's catch-up counts against
	// the library, and no baseline phase runs beside it).
	var drained time.Duration
	phase := func(name string, op func(context.Context) error, t *tally, d time.Duration, n int64) error {
		cpu := readCPU()
		done, elapsed, err := closedLoop(ctx, cfg.writers, n, d, op)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if running && t == &lib {
			start := time.Now()
			if !waitFor(ctx, time.Minute, func() bool { return sent.sent.Load() >= seq.Load() }) {
				return fmt.Errorf("%s: %d of %d sent a minute after the phase", name, sent.sent.Load(), seq.Load())
			}
			drained += time.Since(start)
			elapsed += time.Since(start)
		}
		use := readCPU().since(cpu)
		t.n, t.elapsed = t.n+done, t.elapsed+elapsed
		t.cpu = t.cpu.add(use)
		return nil
	}
	baseName := fmt.Sprintf("baseline (order insert + plain insert of %d bytes)", contentLen)
	libName := "library  (order insert + PublishTx)"
	out.linef("writers=%d, outbox row Content %d bytes, mode=%s, %d rounds", cfg.writers, contentLen, cfg.mode, cfg.rounds)
	for _, warm := range []struct {
		name string
		op   func(context.Context) error
	}{{baseName, baseline}, {libName, library}} {
		if _, _, err := closedLoop(ctx, cfg.writers, 0, time.Second, warm.op); err != nil {
			return result{}, fmt.Errorf("warm-up %s: %w", warm.name, err)
		}
	}
	if running && !waitFor(ctx, time.Minute, func() bool { return sent.sent.Load() >= seq.Load() }) {
		return result{}, errors.New("the warm-up's messages were not all sent within a minute")
	}
	before := sent.sent.Load()
	publishedBefore := seq.Load()
	perRound := cfg.duration / time.Duration(cfg.rounds)
	perRoundN := int64(cfg.n / cfg.rounds)
	for r := range cfg.rounds {
		first, second := func() error { return phase(baseName, baseline, &base, perRound, perRoundN) },
			func() error { return phase(libName, library, &lib, perRound, perRoundN) }
		if r%2 == 1 {
			first, second = second, first
		}
		if err := first(); err != nil {
			return result{}, err
		}
		if err := second(); err != nil {
			return result{}, err
		}
	}
	baseRate, libRate := rate(base.n, base.elapsed), rate(lib.n, lib.elapsed)
	out.linef("%s: %d tx in %s = %s tx/s", baseName, base.n, base.elapsed.Round(time.Millisecond), num(baseRate))
	out.linef("  %s", base.cpu.format(base.elapsed))
	out.linef("  %s", base.cpu.perMessage(base.n, "transaction"))
	out.linef("%s: %d tx in %s = %s tx/s", libName, lib.n, lib.elapsed.Round(time.Millisecond), num(libRate))
	out.linef("  %s", lib.cpu.format(lib.elapsed))
	out.linef("  %s", lib.cpu.perMessage(lib.n, "transaction"))
	if running {
		out.linef("sent to the broker: %d of %d published; waiting for the last sends added %s to the library's time",
			sent.sent.Load()-before, seq.Load()-publishedBefore, drained.Round(time.Millisecond))
	}
	return result{value: libRate, baseline: baseRate, unit: "tx/s"}, nil
}

// contentLength publishes one message with the bus stopped, returns the
// length of its stored Content and deletes it.
func contentLength[TTx any](ctx context.Context, db *database[TTx], bus *cap.Bus[TTx], pad string) (int, error) {
	err := db.inTx(ctx, func(tx TTx) error {
		return bus.PublishTx(ctx, tx, topic, payload{Seq: 123456, Pad: pad})
	})
	if err != nil {
		return 0, err
	}
	recs, _, err := db.store.List(ctx, storage.Published, storage.ListQuery{Limit: 1})
	if err != nil {
		return 0, err
	}
	if len(recs) != 1 {
		return 0, errors.New("the sample message was not stored")
	}
	return len(recs[0].Content), db.store.Delete(ctx, storage.Published, []int64{recs[0].ID})
}
