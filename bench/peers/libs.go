package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	wmessage "github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage/postgres"
	"github.com/go-cap/cap/transport/rabbitmq"
)

const topic = "order.created"

var instances atomic.Int64

// ---- cap ----

type capLib struct {
	counts
	w   *world
	bus *cap.Bus[pgx.Tx]
	tr  *rabbitmq.Transport
	pad string
}

func newCapLib(ctx context.Context, w *world) (*capLib, error) {
	prefix := w.run + ".c" + strconv.FormatInt(instances.Add(1), 10)
	store, err := postgres.New(w.pool, postgres.Options{Schema: w.schema})
	if err != nil {
		return nil, err
	}
	tr, err := rabbitmq.New(rabbitmq.Config{URL: w.cfg.amqpURL, ExchangeName: prefix + ".router"})
	if err != nil {
		return nil, err
	}
	group := prefix + ".peers.v1"
	w.declared(prefix+".router", group)
	bus, err := cap.New(store, tr, cap.Options{GroupNamePrefix: prefix, TopicNamePrefix: prefix})
	if err != nil {
		_ = tr.Close()
		return nil, err
	}
	l := &capLib{w: w, bus: bus, tr: tr, pad: w.pad()}
	err = cap.Subscribe(bus, topic, "peers", func(ctx context.Context, m cap.Msg[payload]) error {
		l.got.Add(1)
		return nil
	})
	if err != nil {
		_ = tr.Close()
		return nil, err
	}
	if err := store.Migrate(ctx); err != nil {
		_ = tr.Close()
		return nil, err
	}
	// The group's queue exists before anything is sent, as for burn-down.
	c, err := tr.Subscribe(ctx, group, []string{prefix + "." + topic})
	if err != nil {
		_ = tr.Close()
		return nil, err
	}
	_ = c.Close()
	return l, nil
}

func (l *capLib) start(ctx context.Context) error { return l.bus.Start(ctx) }

func (l *capLib) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = l.bus.Shutdown(ctx)
	_ = l.tr.Close()
}

func (l *capLib) publishTx(ctx context.Context) error {
	seq := l.pub.Add(1)
	err := l.bus.InTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if err := l.w.order(ctx, tx); err != nil {
			return err
		}
		return l.bus.PublishTx(ctx, tx, topic, payload{Seq: seq, Pad: l.pad})
	})
	if err != nil {
		l.pub.Add(-1)
	}
	return err
}

func (l *capLib) store(ctx context.Context, n int) error {
	for i := 0; i < n; i += 500 {
		batch := make([]cap.Outgoing, 0, 500)
		for j := i; j < min(i+500, n); j++ {
			batch = append(batch, cap.Outgoing{Topic: topic, Payload: payload{Seq: int64(j), Pad: l.pad}})
		}
		if err := l.bus.PublishBatch(ctx, batch...); err != nil {
			return err
		}
		l.pub.Add(int64(len(batch)))
	}
	return nil
}

// pad is the payload's padding: the same body size for every library.
func (w *world) pad() string {
	var p payload
	_ = json.Unmarshal(w.body, &p)
	return p.Pad
}

// ---- Watermill ----

// watermillLib publishes with watermill-sql in the business transaction
// to the forwarder's topic (an envelope naming the AMQP topic); the
// Forwarder publishes to watermill-amqp with confirms; an AMQP subscriber
// consumes.
type watermillLib struct {
	counts
	w        *world
	schema   wsql.DefaultPostgreSQLSchema
	fwdTopic string
	amqpTop  string
	amqpCfg  wamqp.Config

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closer []func() error
	pad    string
}

func newWatermillLib(ctx context.Context, w *world) (*watermillLib, error) {
	id := strconv.FormatInt(instances.Add(1), 10)
	l := &watermillLib{w: w, fwdTopic: "fwd" + id, amqpTop: w.run + ".w" + id, pad: w.pad()}
	l.schema = wsql.DefaultPostgreSQLSchema{
		GenerateMessagesTableName: func(topic string) string { return w.table("watermill_" + topic) },
	}
	l.amqpCfg = wamqp.NewDurablePubSubConfig(w.cfg.amqpURL, wamqp.GenerateQueueNameTopicNameWithSuffix("peers"))
	l.amqpCfg.Publish.ConfirmDelivery = true
	l.amqpCfg.Consume.Qos.PrefetchCount = rabbitmq.DefaultPrefetch // as the library's consumer
	w.declared(l.amqpTop, l.amqpTop+"_peers")
	// The messages and offsets tables exist before a transaction publishes.
	sub, err := l.sqlSubscriber()
	if err != nil {
		return nil, err
	}
	if err := sub.SubscribeInitialize(l.fwdTopic); err != nil {
		return nil, err
	}
	_ = sub.Close()
	return l, nil
}

func (l *watermillLib) sqlSubscriber() (*wsql.Subscriber, error) {
	return wsql.NewSubscriber(wsql.BeginnerFromPgx(l.w.pool), wsql.SubscriberConfig{
		ConsumerGroup: "forwarder",
		SchemaAdapter: l.schema,
		OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{
			GenerateMessagesOffsetsTableName: func(topic string) string { return l.w.table("watermill_offsets_" + topic) },
		},
		InitializeSchema: true,
		PollInterval:     100 * time.Millisecond,
	}, watermill.NopLogger{})
}

func (l *watermillLib) start(ctx context.Context) error {
	ctx, l.cancel = context.WithCancel(ctx)
	consumer, err := wamqp.NewSubscriber(l.amqpCfg, watermill.NopLogger{})
	if err != nil {
		return err
	}
	l.closer = append(l.closer, consumer.Close)
	msgs, err := consumer.Subscribe(ctx, l.amqpTop) // declares and binds the queue
	if err != nil {
		return err
	}
	l.wg.Go(func() {
		for m := range msgs {
			l.got.Add(1)
			m.Ack()
		}
	})
	out, err := wamqp.NewPublisher(l.amqpCfg, watermill.NopLogger{})
	if err != nil {
		return err
	}
	l.closer = append(l.closer, out.Close)
	in, err := l.sqlSubscriber()
	if err != nil {
		return err
	}
	l.closer = append(l.closer, in.Close)
	fwd, err := forwarder.NewForwarder(in, out, watermill.NopLogger{}, forwarder.Config{ForwarderTopic: l.fwdTopic})
	if err != nil {
		return err
	}
	l.closer = append(l.closer, fwd.Close)
	l.wg.Go(func() { _ = fwd.Run(ctx) })
	select {
	case <-fwd.Running():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *watermillLib) stop() {
	if l.cancel != nil {
		l.cancel()
	}
	for i := len(l.closer) - 1; i >= 0; i-- {
		_ = l.closer[i]()
	}
	l.wg.Wait()
}

func (l *watermillLib) message(seq int64) (*wmessage.Message, error) {
	body, err := json.Marshal(payload{Seq: seq, Pad: l.pad})
	if err != nil {
		return nil, err
	}
	return wmessage.NewMessage(watermill.NewUUID(), body), nil
}

func (l *watermillLib) publisher(db wsql.ContextExecutor) (*forwarder.Publisher, error) {
	pub, err := wsql.NewPublisher(db, wsql.PublisherConfig{SchemaAdapter: l.schema}, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	return forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: l.fwdTopic}), nil
}

func (l *watermillLib) publishTx(ctx context.Context) error {
	seq := l.pub.Add(1)
	err := pgx.BeginFunc(ctx, l.w.pool, func(tx pgx.Tx) error {
		if err := l.w.order(ctx, tx); err != nil {
			return err
		}
		pub, err := l.publisher(wsql.TxFromPgx(tx))
		if err != nil {
			return err
		}
		m, err := l.message(seq)
		if err != nil {
			return err
		}
		m.SetContext(ctx)
		return pub.Publish(l.amqpTop, m)
	})
	if err != nil {
		l.pub.Add(-1)
	}
	return err
}

func (l *watermillLib) store(ctx context.Context, n int) error {
	pub, err := l.publisher(wsql.BeginnerFromPgx(l.w.pool))
	if err != nil {
		return err
	}
	for i := 0; i < n; i += 500 {
		var batch []*wmessage.Message
		for j := i; j < min(i+500, n); j++ {
			m, err := l.message(int64(j))
			if err != nil {
				return err
			}
			m.SetContext(ctx)
			batch = append(batch, m)
		}
		if err := pub.Publish(l.amqpTop, batch...); err != nil {
			return err
		}
		l.pub.Add(int64(len(batch)))
	}
	return nil
}

// ---- River ----

type orderArgs struct {
	Seq int64  `json:"seq"`
	Pad string `json:"pad"`
}

func (orderArgs) Kind() string { return "peers_order" }

type orderWorker struct {
	river.WorkerDefaults[orderArgs]
	got *atomic.Int64
}

func (w *orderWorker) Work(context.Context, *river.Job[orderArgs]) error {
	w.got.Add(1)
	return nil
}

type riverLib struct {
	counts
	w      *world
	client *river.Client[pgx.Tx]
	pad    string
}

var riverMigrated sync.Once

func newRiverLib(ctx context.Context, w *world) (*riverLib, error) {
	driver := riverpgxv5.New(w.pool)
	var merr error
	riverMigrated.Do(func() {
		m, err := rivermigrate.New(driver, &rivermigrate.Config{Schema: w.schema})
		if err == nil {
			_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
		}
		merr = err
	})
	if merr != nil {
		return nil, fmt.Errorf("river migrate: %w", merr)
	}
	l := &riverLib{w: w, pad: w.pad()}
	workers := river.NewWorkers()
	river.AddWorker(workers, &orderWorker{got: &l.got})
	client, err := river.NewClient(driver, &river.Config{
		Schema:  w.schema,
		Queues:  map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 100}},
		Workers: workers,
	})
	if err != nil {
		return nil, err
	}
	l.client = client
	return l, nil
}

func (l *riverLib) start(ctx context.Context) error { return l.client.Start(ctx) }

func (l *riverLib) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = l.client.Stop(ctx)
}

func (l *riverLib) publishTx(ctx context.Context) error {
	seq := l.pub.Add(1)
	err := pgx.BeginFunc(ctx, l.w.pool, func(tx pgx.Tx) error {
		if err := l.w.order(ctx, tx); err != nil {
			return err
		}
		_, err := l.client.InsertTx(ctx, tx, orderArgs{Seq: seq, Pad: l.pad}, nil)
		return err
	})
	if err != nil {
		l.pub.Add(-1)
	}
	return err
}

func (l *riverLib) store(ctx context.Context, n int) error {
	for i := 0; i < n; i += 500 {
		var batch []river.InsertManyParams
		for j := i; j < min(i+500, n); j++ {
			batch = append(batch, river.InsertManyParams{Args: orderArgs{Seq: int64(j), Pad: l.pad}})
		}
		if _, err := l.client.InsertMany(ctx, batch); err != nil {
			return err
		}
		l.pub.Add(int64(len(batch)))
	}
	return nil
}
