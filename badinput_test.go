package cap_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/rabbitmq"
)

// Bad input on the real servers: a bus on PostgreSQL and RabbitMQ gets
// messages a CAP producer would never send, payloads at the edge of what
// the stack carries, and a database that goes away under it. The cases
// bus_test.go covers on SQLite and the memory broker are not repeated.

// serverTimeout bounds each wait on the servers.
const serverTimeout = 20 * time.Second

func getenvOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

var (
	pgDSN   = getenvOr("CAP_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	amqpURL = getenvOr("CAP_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")

	serversOnce sync.Once
	serversErr  error
)

// needServers skips the test when PostgreSQL or RabbitMQ is unreachable,
// and fails it under CI, where a missing server is a failure.
func needServers(t *testing.T) {
	t.Helper()
	serversOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pgDSN)
		if err != nil {
			serversErr = err
			return
		}
		_ = conn.Close(ctx)
		ac, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
		if err != nil {
			serversErr = err
			return
		}
		_ = ac.Close()
	})
	if serversErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL (CAP_TEST_POSTGRES) or RabbitMQ (CAP_TEST_RABBITMQ) unreachable: %v", serversErr)
		}
		t.Skipf("PostgreSQL (CAP_TEST_POSTGRES) or RabbitMQ (CAP_TEST_RABBITMQ) unreachable: %v", serversErr)
	}
}

// testLog shows the bus's logs in the test's output with CAP_TEST_LOG=1.
func testLog(t *testing.T) *slog.Logger {
	if os.Getenv("CAP_TEST_LOG") == "" {
		return quietLogger()
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func randomHex() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// realBus is a bus on PostgreSQL and RabbitMQ with names of its own: a
// schema, an exchange and a group prefix, removed when the test ends.
type realBus struct {
	pool     *pgxpool.Pool
	store    *postgres.Store[pgx.Tx]
	tr       *rabbitmq.Transport
	bus      *cap.Bus[pgx.Tx]
	schema   string
	exchange string
	prefix   string
}

type realConfig struct {
	opts cap.Options
	dsn  string // the bus's database; the test server when empty
	// mandatory makes the broker return messages no queue is bound for.
	mandatory bool
}

func newRealBus(t *testing.T, cfg realConfig) *realBus {
	t.Helper()
	needServers(t)
	ctx := context.Background()
	id := randomHex()
	rb := &realBus{schema: "cap_bad_" + id, exchange: "cap.bad." + id, prefix: "bad" + id}
	admin, err := pgx.Connect(ctx, pgDSN)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := admin.Exec(context.Background(), `DROP SCHEMA IF EXISTS "`+rb.schema+`" CASCADE`)
		require.NoError(t, err)
		_ = admin.Close(context.Background())
	})
	// The test's own tables live in the schema too; the bus migrates into it.
	_, err = admin.Exec(ctx, `CREATE SCHEMA "`+rb.schema+`"`)
	require.NoError(t, err)
	_, err = admin.Exec(ctx, `CREATE TABLE "`+rb.schema+`".effects (msg_id text NOT NULL, note text NOT NULL)`)
	require.NoError(t, err)

	dsn := cfg.dsn
	if dsn == "" {
		dsn = pgDSN
	}
	pcfg, err := pgxpool.ParseConfig(dsn)
	require.NoError(t, err)
	pcfg.MaxConns = 6
	rb.pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	t.Cleanup(rb.pool.Close)
	rb.store, err = postgres.New(rb.pool, postgres.Options{Schema: rb.schema, Logger: quietLogger()})
	require.NoError(t, err)
	rb.tr, err = rabbitmq.New(rabbitmq.Config{URL: amqpURL, ExchangeName: rb.exchange, Mandatory: cfg.mandatory,
		ConnectionName: "cap-bad-input " + id, Logger: testLog(t)})
	require.NoError(t, err)
	t.Cleanup(func() { rb.deleteBrokerObjects(t) })
	t.Cleanup(func() { _ = rb.tr.Close() })

	opts := cfg.opts
	opts.GroupNamePrefix = rb.prefix
	if opts.Logger == nil {
		opts.Logger = testLog(t)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 50 * time.Millisecond
	}
	wid := int64(11)
	opts.WorkerID = &wid
	rb.bus, err = cap.New(rb.store, rb.tr, opts)
	require.NoError(t, err)
	return rb
}

// start starts the bus until the test ends. (Start's context is the bus's
// life: ending it stops the bus abruptly.)
func (rb *realBus) start(t *testing.T) {
	t.Helper()
	require.NoError(t, rb.bus.Start(context.Background()))
	t.Cleanup(func() { rb.shutdown(t) })
}

func (rb *realBus) shutdown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), serverTimeout)
	defer cancel()
	require.NoError(t, rb.bus.Shutdown(ctx))
}

// queue is the broker queue of a group, as the bus names it.
func (rb *realBus) queue(group string) string { return rb.prefix + "." + group + ".v1" }

func (rb *realBus) deleteBrokerObjects(t *testing.T) {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Logf("delete broker objects: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	for g := range rb.bus.Groups() { // a group is a queue
		if _, err := ch.QueueDelete(g, false, false, false); err != nil {
			t.Logf("delete queue %s: %v", g, err)
		}
	}
	_ = ch.ExchangeDelete(rb.exchange, false, false)
}

// publishRaw publishes to the bus's exchange as a producer that does not go
// through the bus would.
func (rb *realBus) publishRaw(t *testing.T, topic string, p amqp.Publishing) {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.Confirm(false))
	ctx, cancel := context.WithTimeout(context.Background(), serverTimeout)
	defer cancel()
	conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, rb.exchange, topic, false, false, p)
	require.NoError(t, err)
	ok, err := conf.WaitContext(ctx)
	require.NoError(t, err)
	require.True(t, ok, "the broker refused the message")
}

// ready returns the number of messages waiting in a queue. Once the bus is
// shut down, its unacknowledged deliveries are back in the queue: zero then
// means every delivery was acked.
func ready(t *testing.T, queue string) int {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(t, err)
	return q.Messages
}

// rows returns the rows of a table, of one group for Received.
func (rb *realBus) rows(t *testing.T, tbl storage.Table, group string) []*storage.Record {
	t.Helper()
	q := storage.ListQuery{Limit: 1000}
	if group != "" {
		q.Group = rb.queue(group)
	}
	recs, _, err := rb.store.List(context.Background(), tbl, q)
	require.NoError(t, err)
	return recs
}

// effects returns the notes the handlers committed, in order.
func (rb *realBus) effects(t *testing.T) []string {
	t.Helper()
	rs, err := rb.pool.Query(context.Background(), `SELECT note FROM "`+rb.schema+`".effects ORDER BY note`)
	require.NoError(t, err)
	notes, err := pgx.CollectRows(rs, pgx.RowTo[string])
	require.NoError(t, err)
	return notes
}

func (rb *realBus) effect(ctx context.Context, tx pgx.Tx, id, note string) error {
	_, err := tx.Exec(ctx, `INSERT INTO "`+rb.schema+`".effects (msg_id, note) VALUES ($1, $2)`, id, note)
	return err
}

func decoded(t *testing.T, r *storage.Record) *message.Message {
	t.Helper()
	m, err := message.DecodeContent(r.Content)
	require.NoError(t, err)
	return m
}

// requireFailedForGood checks a row that can never succeed: Failed, never
// due again, with the reason in cap-exception.
func requireFailedForGood(t *testing.T, r *storage.Record, reason ...string) {
	t.Helper()
	require.Equal(t, storage.StatusFailed, r.Status)
	require.Nil(t, r.NextAttemptAt, "a message that can never succeed is not retried")
	exc := decoded(t, r).Exception()
	for _, s := range reason {
		require.Contains(t, exc, s)
	}
}

// A message without cap-msg-id or cap-msg-name is stored Failed, with the
// reason, and acked once: never redelivered in a loop (CAP #1561).
func TestRealForeignMessageFailedAndAcked(t *testing.T) {
	t.Parallel()
	var failed atomic.Int32
	rb := newRealBus(t, realConfig{opts: cap.Options{
		FailedThresholdCallback: func(ctx context.Context, fi cap.FailedInfo) { failed.Add(1) },
	}})
	var calls atomic.Int32
	require.NoError(t, cap.Subscribe(rb.bus, "legacy.event", "g", func(ctx context.Context, m cap.Msg[order]) error {
		calls.Add(1)
		return nil
	}))
	rb.start(t)

	for _, h := range []amqp.Table{
		nil, // a plain AMQP message
		{"cap-msg-id": "only-an-id"},
		{"cap-msg-name": "legacy.event"},
		{"cap-msg-id": "", "cap-msg-name": "legacy.event", "x-trace": "t"},
	} {
		rb.publishRaw(t, "legacy.event", amqp.Publishing{Headers: h, Body: []byte(`{"id":1}`)})
	}
	eventually(t, serverTimeout, func() bool { return len(rb.rows(t, storage.Received, "g")) == 4 }, "four rows stored")
	for _, r := range rb.rows(t, storage.Received, "g") {
		requireFailedForGood(t, r, "MissingHeadersException", message.HeaderMessageID, "CustomHeaders")
		require.Equal(t, "legacy.event", r.Name, "the routing key names the row")
		require.Equal(t, `{"id":1}`, string(decoded(t, r).Body), "the body is kept for the dashboard")
	}
	// A redelivery would store another row: each has an id of its own.
	require.Never(t, func() bool { return len(rb.rows(t, storage.Received, "g")) > 4 }, time.Second, 50*time.Millisecond,
		"a message without CAP headers was delivered again")
	require.Zero(t, calls.Load())
	require.EqualValues(t, 4, failed.Load(), "FailedThresholdCallback once per message")
	rb.shutdown(t)
	require.Zero(t, ready(t, rb.queue("g")), "every delivery was acked")
}

// Options.CustomHeaders turns a foreign message into a CAP one: here its
// AMQP message-id becomes cap-msg-id, so a redelivered copy is a duplicate.
func TestRealForeignMessageThroughCustomHeaders(t *testing.T) {
	t.Parallel()
	rb := newRealBus(t, realConfig{opts: cap.Options{CustomHeaders: func(d transport.Delivery) message.Headers {
		rd, ok := d.(*rabbitmq.Delivery)
		if !ok || rd.Raw().MessageId == "" {
			return nil
		}
		return message.Headers{message.HeaderMessageID: "legacy-" + rd.Raw().MessageId, message.HeaderMessageName: d.Topic()}
	}}})
	got := make(chan cap.Msg[order], 10)
	require.NoError(t, cap.SubscribeTx(rb.bus, "legacy.event", "g", func(ctx context.Context, tx pgx.Tx, m cap.Msg[order]) error {
		got <- m
		return rb.effect(ctx, tx, m.ID, m.ID)
	}))
	rb.start(t)

	for _, id := range []string{"a1", "a1", "b2"} {
		rb.publishRaw(t, "legacy.event", amqp.Publishing{MessageId: id, Body: []byte(`{"id":` + id[1:] + `}`)})
	}
	eventually(t, serverTimeout, func() bool {
		rs := rb.rows(t, storage.Received, "g")
		return len(rs) == 2 && rs[0].Status == storage.StatusSucceeded && rs[1].Status == storage.StatusSucceeded
	}, "two Succeeded rows")
	require.Never(t, func() bool { return len(rb.effects(t)) > 2 }, 500*time.Millisecond, 50*time.Millisecond)
	require.Equal(t, []string{"legacy-a1", "legacy-b2"}, rb.effects(t), "the copy of a1 is a duplicate")
	payloads := map[string]order{}
	for len(got) > 0 {
		m := <-got
		require.Equal(t, "legacy.event", m.Topic)
		payloads[m.ID] = m.Payload
	}
	require.Equal(t, map[string]order{"legacy-a1": {ID: 1}, "legacy-b2": {ID: 2}}, payloads)
}

// A body that does not decode into the handler's type fails at once, with
// no retry, and is kept: a body that is not JSON at all as CAP keeps it, a
// data URI in the Content column.
func TestRealBodyNotForTheHandlersType(t *testing.T) {
	t.Parallel()
	rb := newRealBus(t, realConfig{})
	var calls atomic.Int32
	require.NoError(t, cap.Subscribe(rb.bus, "typed", "g", func(ctx context.Context, m cap.Msg[order]) error {
		calls.Add(1)
		return nil
	}))
	rb.start(t)

	bodies := map[string][]byte{
		"text":       []byte(`this is not JSON`),
		"truncated":  []byte(`{"id":1,"item":"bo`),
		"wrong-type": []byte(`{"id":"seven"}`),
		"binary":     {0x00, 0x01, 0xfe, 0xff, '{'},
	}
	for id, body := range bodies {
		rb.publishRaw(t, "typed", amqp.Publishing{Body: body, Headers: amqp.Table{
			message.HeaderMessageID: id, message.HeaderMessageName: "typed", message.HeaderType: "Order"}})
	}
	eventually(t, serverTimeout, func() bool {
		rs := rb.rows(t, storage.Received, "g")
		if len(rs) != len(bodies) {
			return false
		}
		for _, r := range rs {
			if r.Status != storage.StatusFailed {
				return false
			}
		}
		return true
	}, "every row Failed")
	for _, r := range rb.rows(t, storage.Received, "g") {
		requireFailedForGood(t, r, "SubscriberExecutionFailedException", "decode")
		require.Equal(t, 1, r.Retries, "one attempt, no retry")
		require.Equal(t, bodies[r.MessageID], decoded(t, r).Body, "body of %s kept as it came", r.MessageID)
	}
	require.Zero(t, calls.Load())
	raw := rb.rows(t, storage.Received, "g")
	for _, r := range raw {
		if r.MessageID == "binary" {
			require.Contains(t, string(r.Content), `"Value":"data:Order;base64,`+base64.StdEncoding.EncodeToString(bodies["binary"])+`"`)
		}
	}
	rb.shutdown(t)
	require.Zero(t, ready(t, rb.queue("g")))
}

type blob struct {
	N    int    `json:"n"`
	Data string `json:"data"`
}

// A 5 MB message goes through the outbox, the broker and the inbox intact,
// as JSON for a typed handler and as bytes that are not JSON for a raw one.
func TestRealFiveMegabyteBody(t *testing.T) {
	t.Parallel()
	const size = 5 << 20
	rb := newRealBus(t, realConfig{})
	gotJSON := make(chan cap.Msg[blob], 1)
	gotRaw := make(chan cap.Msg[[]byte], 1)
	require.NoError(t, cap.SubscribeTx(rb.bus, "big.json", "g", func(ctx context.Context, tx pgx.Tx, m cap.Msg[blob]) error {
		gotJSON <- m
		return rb.effect(ctx, tx, m.ID, "json")
	}))
	require.NoError(t, cap.Subscribe(rb.bus, "big.raw", "g", func(ctx context.Context, m cap.Msg[[]byte]) error {
		gotRaw <- m
		return nil
	}))
	rb.start(t)

	raw := make([]byte, size)
	_, _ = rand.Read(raw)
	raw[0] = 0xff // never valid JSON
	text := base64.StdEncoding.EncodeToString(raw)[:size]
	ctx, cancel := context.WithTimeout(context.Background(), serverTimeout)
	defer cancel()
	require.NoError(t, rb.bus.InTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		return rb.bus.PublishTx(ctx, tx, "big.json", blob{N: 1, Data: text})
	}))
	require.NoError(t, rb.bus.Publish(ctx, "big.raw", raw))

	for range 2 {
		select {
		case m := <-gotJSON:
			require.Equal(t, 1, m.Payload.N)
			require.True(t, m.Payload.Data == text, "the 5 MB string arrived changed")
		case m := <-gotRaw:
			require.True(t, bytes.Equal(raw, m.Payload), "the 5 MB body arrived changed")
		case <-ctx.Done():
			t.Fatal("a 5 MB message was not handled")
		}
	}
	eventually(t, serverTimeout, func() bool {
		rs := append(rb.rows(t, storage.Published, ""), rb.rows(t, storage.Received, "g")...)
		for _, r := range rs {
			if r.Status != storage.StatusSucceeded {
				return false
			}
		}
		return len(rs) == 4
	}, "every row Succeeded")
	require.Equal(t, []string{"json"}, rb.effects(t))
}

// A topic nobody subscribes to is not an error (CAP's behaviour): the
// broker drops the message. A delivery for a topic the group has no handler
// for any more (its queue is still bound from an older release) is stored
// Failed and acked, and the group goes on with its other topics.
func TestRealUnknownTopic(t *testing.T) {
	t.Parallel()
	var failed atomic.Int32
	rb := newRealBus(t, realConfig{opts: cap.Options{
		FailedThresholdCallback: func(ctx context.Context, fi cap.FailedInfo) {
			if fi.Kind == cap.KindSubscribe {
				failed.Add(1)
			}
		},
	}})
	got := make(chan cap.Msg[order], 10)
	require.NoError(t, cap.Subscribe(rb.bus, "known", "g", func(ctx context.Context, m cap.Msg[order]) error {
		got <- m
		return nil
	}))
	rb.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), serverTimeout)
	defer cancel()

	require.NoError(t, rb.bus.Publish(ctx, "nobody.listens", order{ID: 1}))
	// An older release of the service subscribed "retired" in group g.
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(rb.queue("g"), "retired", rb.exchange, false, nil))
	require.NoError(t, rb.bus.Publish(ctx, "retired", order{ID: 2}))

	eventually(t, serverTimeout, func() bool { return len(rb.rows(t, storage.Received, "g")) == 1 }, "the retired topic's row")
	requireFailedForGood(t, rb.rows(t, storage.Received, "g")[0], "SubscriberNotFoundException", `"retired"`)
	require.NoError(t, rb.bus.Publish(ctx, "known", order{ID: 3}))
	select {
	case m := <-got:
		require.Equal(t, 3, m.Payload.ID, "only the known topic reaches the handler")
	case <-ctx.Done():
		t.Fatal("the group stopped handling its topic")
	}
	eventually(t, serverTimeout, func() bool {
		for _, r := range rb.rows(t, storage.Published, "") {
			if r.Status != storage.StatusSucceeded {
				return false
			}
		}
		return true
	}, "every publish Succeeded, the unrouted one too")
	// A plain handler runs before its Received row is written: wait for it.
	eventually(t, serverTimeout, func() bool { return len(rb.rows(t, storage.Received, "g")) == 2 },
		"the known topic's row")
	require.EqualValues(t, 1, failed.Load())
	rb.shutdown(t)
	require.Zero(t, ready(t, rb.queue("g")))
}

// With rabbitmq.Config.Mandatory, a message no queue is bound for fails to
// send: its row is Failed with the broker's reason, and retried by the
// policy until it gives up.
func TestRealUnknownTopicMandatory(t *testing.T) {
	t.Parallel()
	failed := make(chan cap.FailedInfo, 1)
	rb := newRealBus(t, realConfig{mandatory: true, opts: cap.Options{
		RetryPolicy:             retry.CAP{MaxRetries: 2},
		FailedThresholdCallback: func(ctx context.Context, fi cap.FailedInfo) { failed <- fi },
	}})
	rb.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), serverTimeout)
	defer cancel()
	require.NoError(t, rb.bus.Publish(ctx, "nobody.listens", order{ID: 1}), "the message is stored; sending is the dispatcher's")
	select {
	case fi := <-failed:
		require.Equal(t, cap.KindPublish, fi.Kind)
		require.ErrorIs(t, fi.Err, rabbitmq.ErrUnroutable)
	case <-ctx.Done():
		t.Fatal("FailedThresholdCallback not called")
	}
	eventually(t, serverTimeout, func() bool {
		rs := rb.rows(t, storage.Published, "")
		return len(rs) == 1 && rs[0].Status == storage.StatusFailed && rs[0].NextAttemptAt == nil
	}, "the row Failed for good")
	r := rb.rows(t, storage.Published, "")[0]
	require.Equal(t, 2, r.Retries)
	require.Contains(t, decoded(t, r).Exception(), "PublisherSentFailedException-->")
	require.Contains(t, decoded(t, r).Exception(), "no queue bound")
}

// A transactional handler that panics leaves nothing of its work behind:
// its transaction is rolled back at every attempt, the row ends Failed
// with the panic, and the bus goes on.
func TestRealTransactionalHandlerPanics(t *testing.T) {
	t.Parallel()
	rb := newRealBus(t, realConfig{opts: cap.Options{RetryPolicy: retry.CAP{MaxRetries: 3}}})
	var attempts atomic.Int32
	require.NoError(t, cap.SubscribeTx(rb.bus, "pay", "ledger", func(ctx context.Context, tx pgx.Tx, m cap.Msg[order]) error {
		attempts.Add(1)
		if err := rb.effect(ctx, tx, m.ID, "half-written"); err != nil {
			return err
		}
		panic("ledger corrupted")
	}))
	require.NoError(t, cap.SubscribeTx(rb.bus, "refund", "ledger", func(ctx context.Context, tx pgx.Tx, m cap.Msg[order]) error {
		return rb.effect(ctx, tx, m.ID, "refund")
	}))
	rb.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), serverTimeout)
	defer cancel()
	require.NoError(t, rb.bus.Publish(ctx, "pay", order{ID: 1}))
	eventually(t, serverTimeout, func() bool {
		rs := rb.rows(t, storage.Received, "ledger")
		return len(rs) == 1 && rs[0].Status == storage.StatusFailed && rs[0].NextAttemptAt == nil
	}, "the row Failed for good")
	r := rb.rows(t, storage.Received, "ledger")[0]
	require.Equal(t, "SubscriberExecutionFailedException-->panic: ledger corrupted", decoded(t, r).Exception())
	require.Equal(t, 3, r.Retries)
	require.EqualValues(t, 3, attempts.Load())
	require.Empty(t, rb.effects(t), "a panicking handler's writes were committed")

	require.NoError(t, rb.bus.Publish(ctx, "refund", order{ID: 2}))
	eventually(t, serverTimeout, func() bool { return len(rb.effects(t)) == 1 }, "the next message handled")
	require.Equal(t, []string{"refund"}, rb.effects(t))
	eventually(t, serverTimeout, func() bool { return rb.pool.Stat().AcquiredConns() == 0 },
		"a connection is held: a transaction was left open")
}

// pgProxy forwards TCP connections to PostgreSQL until it is cut: then it
// closes every connection and refuses new ones, as an unreachable server
// does, until it is restored on the same port.
type pgProxy struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
}

func newPgProxy(t *testing.T, target string) *pgProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &pgProxy{target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

// dsn returns the test DSN with the proxy as the server.
func (p *pgProxy) dsn(t *testing.T) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(pgDSN)
	require.NoError(t, err)
	host, port, err := net.SplitHostPort(p.addr)
	require.NoError(t, err)
	return "postgres://" + cfg.User + "@" + net.JoinHostPort(host, port) + "/" + cfg.Database + "?sslmode=disable&connect_timeout=3"
}

func (p *pgProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
}

func (p *pgProxy) forward(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil {
		p.mu.Unlock()
		_ = c.Close()
		_ = s.Close()
		return
	}
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
	_, _ = io.Copy(c, s)
	_ = c.Close()
}

// cut closes the listener and every connection.
func (p *pgProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// restore listens on the same port again.
func (p *pgProxy) restore(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	require.NoError(t, err)
	p.serve(ln)
}

// The database is unreachable when the bus starts: Start fails at once
// with the cause, binds nothing on the broker, and succeeds once the
// database is back.
func TestRealDatabaseUnreachableAtStart(t *testing.T) {
	t.Parallel()
	needServers(t)
	pcfg, err := pgx.ParseConfig(pgDSN)
	require.NoError(t, err)
	proxy := newPgProxy(t, net.JoinHostPort(pcfg.Host, strconv.Itoa(int(pcfg.Port))))
	rb := newRealBus(t, realConfig{dsn: proxy.dsn(t)})
	got := make(chan cap.Msg[order], 1)
	require.NoError(t, cap.Subscribe(rb.bus, "orders", "g", func(ctx context.Context, m cap.Msg[order]) error {
		got <- m
		return nil
	}))
	proxy.cut()

	ctx, cancel := context.WithTimeout(context.Background(), serverTimeout)
	defer cancel()
	began := time.Now()
	err = rb.bus.Start(ctx)
	require.Error(t, err)
	require.Less(t, time.Since(began), 10*time.Second, "Start must not hang on an unreachable database")
	require.ErrorIs(t, err, syscall.ECONNREFUSED, "the cause is kept: %v", err)
	require.ErrorContains(t, err, "cap: migrate storage")
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	_, err = ch.QueueDeclarePassive(rb.queue("g"), true, false, false, false, nil)
	var aerr *amqp.Error
	require.ErrorAs(t, err, &aerr, "the group's queue was declared although Start failed")
	require.Equal(t, amqp.NotFound, aerr.Code)

	err = rb.bus.Publish(ctx, "orders", order{ID: 1})
	require.ErrorContains(t, err, "cap: publish")
	require.ErrorIs(t, err, syscall.ECONNREFUSED)

	proxy.restore(t)
	rb.start(t)
	require.NoError(t, rb.bus.Publish(ctx, "orders", order{ID: 2}))
	select {
	case m := <-got:
		require.Equal(t, 2, m.Payload.ID, "only the message published once the database was back exists")
	case <-ctx.Done():
		t.Fatal("not handled after the database came back")
	}
}

// The database goes away while the service publishes: Publish and InTx
// return the error, and nothing is half-written: no Published row without
// its business row or the other way round, no message on the broker for a
// transaction that did not commit. The bus carries on once it is back.
func TestRealDatabaseUnreachableDuringPublish(t *testing.T) {
	t.Parallel()
	needServers(t)
	pcfg, err := pgx.ParseConfig(pgDSN)
	require.NoError(t, err)
	proxy := newPgProxy(t, net.JoinHostPort(pcfg.Host, strconv.Itoa(int(pcfg.Port))))
	rb := newRealBus(t, realConfig{dsn: proxy.dsn(t)})
	var handled sync.Map
	require.NoError(t, cap.Subscribe(rb.bus, "orders", "g", func(ctx context.Context, m cap.Msg[order]) error {
		handled.Store(m.Payload.ID, true)
		return nil
	}))
	rb.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*serverTimeout)
	defer cancel()
	// order is a business transaction: its row in effects and its message.
	placeOrder := func(ctx context.Context, id int, cutBeforeCommit bool) error {
		return rb.bus.InTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
			if err := rb.effect(ctx, tx, strconv.Itoa(id), "order "+strconv.Itoa(id)); err != nil {
				return err
			}
			if err := rb.bus.PublishTx(ctx, tx, "orders", order{ID: id}); err != nil {
				return err
			}
			if cutBeforeCommit {
				proxy.cut()
			}
			return nil
		})
	}
	isHandled := func(id int) bool { _, ok := handled.Load(id); return ok }

	require.NoError(t, placeOrder(ctx, 1, false))
	eventually(t, serverTimeout, func() bool { return isHandled(1) }, "order 1 handled")

	// The connection is lost between the business writes and the commit.
	err = placeOrder(ctx, 2, true)
	require.ErrorContains(t, err, "cap: commit")
	// The database stays unreachable. The pool's connections were cut, so
	// the error is a broken connection or, once the pool dials anew, a
	// refused one.
	began := time.Now()
	err = rb.bus.Publish(ctx, "orders", order{ID: 3})
	require.ErrorContains(t, err, "cap: publish")
	err = placeOrder(ctx, 4, false)
	require.ErrorContains(t, err, "cap: begin")
	require.Less(t, time.Since(began), 10*time.Second, "publishing must fail promptly while the database is unreachable")

	proxy.restore(t)
	// Broken connections left in the pool are replaced as they are used:
	// the first attempts after the outage may still fail.
	eventually(t, serverTimeout, func() bool { return placeOrder(ctx, 5, false) == nil }, "publish again")
	eventually(t, serverTimeout, func() bool { return isHandled(5) }, "order 5 handled")
	require.Never(t, func() bool { return isHandled(2) || isHandled(3) || isHandled(4) }, time.Second, 50*time.Millisecond,
		"a message whose transaction failed was delivered")
	notes := rb.effects(t)
	require.Contains(t, notes, "order 1")
	require.Contains(t, notes, "order 5")
	require.NotContains(t, notes, "order 2", "the business row of a transaction that did not commit")
	require.NotContains(t, notes, "order 4")
	for _, r := range rb.rows(t, storage.Published, "") {
		var o order
		require.NoError(t, json.Unmarshal(decoded(t, r).Body, &o))
		require.NotContains(t, []int{2, 3, 4}, o.ID, "a Published row of a failed publish")
	}
}
