package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/transport"
)

// topic is the topic every scenario publishes to.
const topic = "bench.order.created"

// payload is the message the scenarios publish; Pad brings its JSON to
// -size bytes.
type payload struct {
	Seq int64  `json:"seq"`
	Pad string `json:"pad"`
}

// padFor returns the Pad that makes a payload's JSON size bytes long (for a
// six-digit Seq).
func padFor(size int) string {
	return strings.Repeat("x", max(size-len(`{"seq":123456,"pad":""}`), 0))
}

// newBus returns a bus on the database and tr with the run's tuning flags
// and its private group prefix.
func newBus[TTx any](cfg *config, db *database[TTx], tr transport.Transport, br *broker) (*cap.Bus[TTx], error) {
	return cap.New(db.busStore(), br.busTransport(tr), cap.Options{
		DefaultGroup:        "bench",
		GroupNamePrefix:     br.prefix,
		BatchSize:           cfg.batch,
		Senders:             cfg.senders,
		ConsumerThreadCount: cfg.consumers,
		Workers:             cfg.workers,
		Logger:              cfg.logger(),
	})
}

// flow is a running bus with one subscriber group, and producers that
// publish in business transactions.
type flow[TTx any] struct {
	cfg   *config
	db    *database[TTx]
	bus   *cap.Bus[TTx]
	track *tracker
	pad   string

	seq       atomic.Int64
	committed atomic.Int64
	handled   atomic.Int64
}

// startFlow starts a bus whose group "bench" handles the topic.
func startFlow[TTx any](ctx context.Context, cfg *config, db *database[TTx], br *broker) (*flow[TTx], error) {
	bus, err := newBus(cfg, db, br.tr, br)
	if err != nil {
		return nil, err
	}
	br.addQueue(br.group("bench"))
	f := &flow[TTx]{cfg: cfg, db: db, bus: bus, track: newTracker(), pad: padFor(cfg.size)}
	err = cap.Subscribe(bus, topic, "bench", func(ctx context.Context, m cap.Msg[payload]) error {
		f.track.started(m.Payload.Seq, time.Now())
		f.handled.Add(1)
		if cfg.handle > 0 {
			time.Sleep(cfg.handle)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := bus.Start(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// publish commits one business transaction holding an order row and its
// message, through InTx (which hands the message to the dispatcher).
func (f *flow[TTx]) publish(ctx context.Context) error {
	seq := f.seq.Add(1)
	err := f.bus.InTx(ctx, func(ctx context.Context, tx TTx) error {
		if err := f.db.execTx(ctx, tx, f.db.insertOrder, f.db.nextID(), "customer", 42); err != nil {
			return err
		}
		return f.bus.PublishTx(ctx, tx, topic, payload{Seq: seq, Pad: f.pad})
	})
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	f.track.committed(seq, time.Now())
	f.committed.Add(1)
	return nil
}

// backlog is the number of committed messages whose handler has not
// started.
func (f *flow[TTx]) backlog() int64 { return f.committed.Load() - f.handled.Load() }

// drain waits until every committed message was handled, for at most
// limit, and reports how long it took.
func (f *flow[TTx]) drain(ctx context.Context, limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	ok := waitFor(ctx, limit, func() bool { return f.backlog() <= 0 })
	return time.Since(start), ok
}

func (f *flow[TTx]) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return f.bus.Shutdown(ctx)
}
