// Package cap is a transactional outbox and event bus for Go services, the
// Go counterpart of DotNetCore.CAP and wire-compatible with it.
//
// A service publishes inside its own database transaction; the message is
// stored in the Published table by that transaction and sent to the broker
// once, and only if, it commits. Subscribers receive every message at least
// once per group; a transactional handler (SubscribeTx) commits its own
// writes together with the Received row, which makes its effect exactly
// once per group.
//
// A Bus runs behind two interfaces: a storage.Storage (PostgreSQL, MySQL,
// SQL Server, MongoDB, SQLite, in-memory) and a transport.Transport
// (RabbitMQ, Kafka, NATS JetStream, Redis Streams, in-memory).
package cap

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-cap/cap/cleanup"
	"github.com/go-cap/cap/internal/engine"
	"github.com/go-cap/cap/internal/telemetry"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/transport"
)

// Errors returned by the bus. Test them with errors.Is.
var (
	// ErrInvalidOptions: New was given options that cannot work.
	ErrInvalidOptions = errors.New("cap: invalid options")
	// ErrStarted: the bus was started already (Start twice, or Subscribe
	// after Start).
	ErrStarted = errors.New("cap: bus already started")
	// ErrStopped: the bus was shut down; it cannot start again.
	ErrStopped = errors.New("cap: bus stopped")
	// ErrDuplicateSubscriber: the (topic, group) pair has a handler.
	ErrDuplicateSubscriber = errors.New("cap: duplicate subscriber")
	// ErrInvalidTopic: a topic or group name is empty or malformed.
	ErrInvalidTopic = errors.New("cap: invalid topic")
)

// Bus publishes and consumes messages. TTx is the transaction type of its
// storage (*sql.Tx, pgx.Tx ...): PublishTx only accepts that kind. A Bus is
// safe for concurrent use.
type Bus[TTx any] struct {
	store storage.Storage[TTx]
	tr    transport.Transport
	opts  Options
	ids   *message.IDGenerator

	cfg       *engine.Config[TTx]
	reg       engine.Registry[TTx]
	disp      *engine.Dispatcher[TTx]
	exec      *engine.Executor[TTx]
	consumers *engine.Consumers[TTx]

	collector *cleanup.Collector // nil when disabled
	tel       *telemetry.Telemetry
	gauges    func() error // unregisters the outbox gauges
	node      storage.Node // this instance, for its heartbeat; Started is in started
	started   atomic.Int64 // unix nanoseconds of Start, 0 before

	mu    sync.Mutex
	state int // 0 new, 1 running, 2 stopped
	// running mirrors state == 1 for readers that must not wait for b.mu,
	// which Shutdown holds until it is done (health probes, Nodes).
	running atomic.Bool
	cancel  context.CancelFunc
	bg      sync.WaitGroup
	runDone chan struct{}
}

// New returns a bus over store and tr. It checks the options but touches
// neither the database nor the broker; Start does.
func New[TTx any](store storage.Storage[TTx], tr transport.Transport, opts Options) (*Bus[TTx], error) {
	if store == nil || tr == nil {
		return nil, fmt.Errorf("%w: a storage and a transport are required", ErrInvalidOptions)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	wid := o.WorkerID
	if wid == nil {
		w, err := message.WorkerIDFromEnv()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
		wid = &w
	}
	ids, err := message.NewIDGenerator(*wid)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	tel, err := telemetry.New(telemetry.Config{TracerProvider: o.TracerProvider, MeterProvider: o.MeterProvider,
		Propagator: o.Propagator, System: messagingSystem(tr), ClientID: o.InstanceID})
	if err != nil {
		return nil, fmt.Errorf("%w: metrics: %w", ErrInvalidOptions, err)
	}
	b := &Bus[TTx]{store: store, tr: tr, opts: o, ids: ids, tel: tel, node: newNode(o.InstanceID, ids.Next())}
	b.cfg = &engine.Config[TTx]{
		Store: store, Transport: tr, Version: o.Version, Logger: o.Logger,
		PollInterval: o.PollInterval, Lease: o.Lease, BatchSize: o.BatchSize, Senders: o.Senders,
		Workers: o.Workers, Consumers: o.ConsumerThreadCount, StoreFirst: o.StoreFirst,
		SendRetry: o.RetryPolicy, HandlerRetry: o.RetryPolicy,
		SucceedExpiry: o.SucceedMessageExpiredAfter, FailedExpiry: o.FailedMessageExpiredAfter,
		InstanceID: o.InstanceID, HeadersBuilder: o.CustomHeaders, NewID: ids.Next, Tel: tel,
	}
	if cb := o.FailedThresholdCallback; cb != nil {
		b.cfg.OnFailed = func(ctx context.Context, fi engine.FailedInfo) {
			kind := KindPublish
			if fi.Table == storage.Received {
				kind = KindSubscribe
			}
			defer func() {
				if r := recover(); r != nil {
					o.Logger.ErrorContext(ctx, "cap: FailedThresholdCallback panicked", "panic", r)
				}
			}()
			cb(ctx, FailedInfo{Kind: kind, Message: fi.Message, Err: fi.Err})
		}
	}
	b.disp = engine.NewDispatcher(b.cfg)
	b.exec = engine.NewExecutor(b.cfg, &b.reg, b.disp)
	b.consumers = engine.NewConsumers(b.cfg, &b.reg, b.exec)
	return b, nil
}

// Options returns the options in force, defaults filled in.
func (b *Bus[TTx]) Options() Options { return b.opts }

// Storage returns the bus's storage.
func (b *Bus[TTx]) Storage() storage.Storage[TTx] { return b.store }

// Start migrates the storage, binds every subscribed group on the broker
// and starts the dispatcher, the consumers, the retry and delay scheduling
// and the collector. They run until Shutdown, or until ctx ends: cancelling
// ctx stops them at once, with no clean-up: the rows they held come back to
// any instance when their lease ends, and the broker consumers are closed
// as a crashed process's would be, so that the broker redelivers what was
// not acked (RabbitMQ at once, other brokers as they redeliver).
func (b *Bus[TTx]) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case 1:
		return ErrStarted
	case 2:
		return ErrStopped
	}
	if err := b.store.Migrate(ctx); err != nil {
		return fmt.Errorf("cap: migrate storage: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	// An abrupt stop: the caller's ctx ends.
	stopOnCtx := context.AfterFunc(ctx, cancel)
	var notify <-chan struct{}
	if n, ok := b.store.(storage.Notifier); ok {
		ch, err := n.Notifications(runCtx)
		if err != nil {
			stopOnCtx()
			cancel()
			return fmt.Errorf("cap: storage notifications: %w", err)
		}
		notify = ch
	}
	b.exec.Run(runCtx)
	b.disp.Run(runCtx, notify)
	if err := b.consumers.Start(runCtx); err != nil {
		stopOnCtx()
		cancel()
		return err
	}
	if b.opts.CollectorCleaningInterval > 0 {
		col := &cleanup.Collector{Store: b.store, Interval: b.opts.CollectorCleaningInterval, Logger: b.opts.Logger}
		if l, ok := b.store.(storage.Leaser); ok {
			// One instance of those on this database collects at a time.
			col.Lease = &cleanup.Lease{Leaser: l, Owner: b.node.ID,
				TTL: b.opts.Lease}
		}
		b.collector = col
		b.bg.Add(1)
		go func() {
			defer b.bg.Done()
			col.Run(runCtx)
		}()
	}
	if br, ok := b.store.(storage.BacklogReader); ok {
		unreg, err := b.tel.RegisterBacklog(func(ctx context.Context, t storage.Table) ([]storage.Backlog, error) {
			return br.Backlog(ctx, t, b.opts.Version)
		})
		if err != nil {
			b.opts.Logger.WarnContext(ctx, "cap: the outbox gauges could not be registered", "error", err)
		}
		b.gauges = unreg
	}
	b.started.Store(time.Now().UnixNano())
	b.startHeartbeat(ctx, runCtx)
	b.cancel = func() {
		stopOnCtx()
		cancel()
	}
	b.state = 1
	b.running.Store(true)
	return nil
}

// Shutdown stops taking messages from the broker and from the table, waits
// for running handlers and pending sends and writes their outcomes, bounded
// by ctx (or Options.ShutdownTimeout when ctx has no deadline). Handlers
// still running then see their context cancelled; their messages are not
// marked Succeeded and are retried. Shutdown does not close the storage's
// database or the transport. Calling it twice is harmless.
func (b *Bus[TTx]) Shutdown(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != 1 {
		b.state = 2
		return nil
	}
	b.state = 2
	b.running.Store(false)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.opts.ShutdownTimeout)
		defer cancel()
	}
	// Receiving stops first; the broker consumers stay open until the
	// executor is done, so that the deliveries it holds (plain handlers'
	// messages whose rows are written with their outcome) are acked.
	b.consumers.Pause()
	err := b.exec.Stop(ctx)
	b.consumers.Close()
	if derr := b.disp.Stop(ctx); err == nil {
		err = derr
	}
	b.cancel()
	b.bg.Wait()
	if b.gauges != nil {
		_ = b.gauges()
	}
	b.removeNode(ctx)
	if b.collector != nil {
		// Another instance collects from its next try on.
		if rerr := b.collector.Release(ctx); rerr != nil {
			b.opts.Logger.WarnContext(ctx, "cap: releasing the collector's lease failed", "error", rerr)
		}
	}
	if err != nil {
		// Give interrupted handlers a moment to release their rows.
		waited := make(chan struct{})
		go func() {
			b.exec.Wait()
			close(waited)
		}()
		select {
		case <-waited:
		case <-time.After(time.Second):
		}
		return fmt.Errorf("cap: shutdown: %w", err)
	}
	return nil
}

// messagingSystem is messaging.system for the transport's broker, named as
// OpenTelemetry's conventions name it where they do.
func messagingSystem(tr transport.Transport) string {
	n, ok := tr.(transport.Namer)
	if !ok {
		return ""
	}
	switch name := n.Name(); name {
	case "RabbitMQ":
		return "rabbitmq"
	case "Kafka":
		return "kafka"
	case "NATS JetStream":
		return "nats"
	case "RedisStreams":
		return "redis"
	case "InMemory":
		return "memory"
	default:
		return strings.ToLower(strings.ReplaceAll(name, " ", "_"))
	}
}
