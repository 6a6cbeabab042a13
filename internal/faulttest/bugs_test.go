//go:build faults

package faulttest_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
	"github.com/go-cap/cap/storage/sqlite"
	memtr "github.com/go-cap/cap/transport/memory"
	"github.com/go-cap/cap/transport/rabbitmq"
)

// Reproductions of bugs found by the fault harness, the bad-input tests and
// the fuzz tests, kept out of TestFaults and of the normal suite; once a bug
// is fixed its reproduction stays as a regression test:
//
//	go test -tags=faults -run TestBug -v ./internal/faulttest/

// A bus that has no subscriber for a group (a service that only publishes,
// or one whose new version dropped a handler) shares the Received table
// with the instances that do. When a row of that group falls due again (its
// instance crashed and the lease ended, or a retry's backoff ended), such a
// bus may claim it, finds no subscriber and fails it for good
// ("SubscriberNotFoundException"): the message is never handled, although
// the group's own instances are running. The fault harness lost messages
// this way in its three-instances scenario, where producer-only processes
// claimed the consumers' rows.
func TestBugUnsubscribedInstanceFailsOtherGroupsRows(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "cap.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	store, err := sqlite.New(db, sqlite.Options{})
	require.NoError(t, err)
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	wid := int64(3)
	publisher, err := cap.New(store, tr, cap.Options{PollInterval: 20 * time.Millisecond, WorkerID: &wid,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	require.NoError(t, publisher.Start(ctx))
	t.Cleanup(func() { _ = publisher.Shutdown(ctx) })

	// The row of a "billing" instance that crashed while handling it: its
	// lease has ended, so it is due.
	content, err := message.EncodeContent(&message.Message{Headers: message.Headers{
		message.HeaderMessageID: "42", message.HeaderMessageName: "order.created", message.HeaderGroup: "billing.v1",
	}, Body: []byte(`{"n":42}`)})
	require.NoError(t, err)
	inserted, err := store.InsertReceived(ctx, &storage.Record{ID: 42, Version: "v1", Name: "order.created",
		Group: "billing.v1", MessageID: "42", Content: content})
	require.NoError(t, err)
	require.True(t, inserted)

	require.Never(t, func() bool {
		r, err := store.Get(ctx, storage.Received, 42)
		require.NoError(t, err)
		return r.Status == storage.StatusFailed
	}, time.Second, 20*time.Millisecond,
		"a bus with no subscriber in group billing.v1 failed billing's row for good; billing's instances will never run it")
}

// outage is a storage whose database this instance cannot reach while down
// is set: claims, lease extensions and outcome writes fail, as they do for an
// instance cut off from PostgreSQL while the others still reach it.
type outage struct {
	storage.Storage[*sql.Tx]
	down atomic.Bool
}

var errOutage = errors.New("database unreachable from this instance")

func (o *outage) Claim(ctx context.Context, t storage.Table, req storage.ClaimRequest) ([]*storage.Record, error) {
	if o.down.Load() {
		return nil, errOutage
	}
	return o.Storage.Claim(ctx, t, req)
}

func (o *outage) Reschedule(ctx context.Context, t storage.Table, ids []int64, in time.Duration) error {
	if o.down.Load() {
		return errOutage
	}
	return o.Storage.Reschedule(ctx, t, ids, in)
}

func (o *outage) SetOutcomes(ctx context.Context, t storage.Table, outs []storage.Outcome) error {
	if o.down.Load() {
		return errOutage
	}
	return o.Storage.SetOutcomes(ctx, t, outs)
}

// An instance whose handler failed while it could not reach the database
// keeps retrying the write of that Failed outcome (about 5 s). Meanwhile its
// lease ends, another instance claims the row and completes it: the
// transactional handler's effect is committed and the row is Succeeded.
// When the first instance reaches the database again, its stale outcome
// overwrites Succeeded with Failed and makes the row due, so the
// transactional handler runs and commits its effect a second time. The fault
// harness saw this in its "all" scenario (inbox_duplicates=1 across a
// PostgreSQL restart). SetOutcomes, unlike SetOutcomesTx, does not refuse a
// row that is already Succeeded, and nothing fences an instance whose lease
// has ended.
func TestBugStaleOutcomeUndoesSuccess(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "cap.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	_, err = db.ExecContext(ctx, `CREATE TABLE effects (msg_id TEXT NOT NULL, instance TEXT NOT NULL)`)
	require.NoError(t, err)
	store, err := sqlite.New(db, sqlite.Options{})
	require.NoError(t, err)
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	policy := retry.CAP{MaxRetries: 100, ImmediateAttempts: -1, Interval: 50 * time.Millisecond}
	newBus := func(s storage.Storage[*sql.Tx], name string, wid int64) *cap.Bus[*sql.Tx] {
		b, err := cap.New(s, tr, cap.Options{PollInterval: 20 * time.Millisecond, Lease: 300 * time.Millisecond,
			RetryPolicy: policy, WorkerID: &wid, InstanceID: name, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		require.NoError(t, err)
		return b
	}
	effect := func(ctx context.Context, tx *sql.Tx, instance, id string) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO effects (msg_id, instance) VALUES (?, ?)`, id, instance)
		return err
	}
	effects := func() (n int) {
		require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM effects`).Scan(&n))
		return n
	}

	// Instance a receives the message; its database goes away while its
	// handler runs.
	cut := &outage{Storage: store}
	a := newBus(cut, "a", 1)
	require.NoError(t, cap.SubscribeTx(a, "pay", "ledger", func(ctx context.Context, tx *sql.Tx, m cap.Msg[int]) error {
		cut.down.Store(true)
		return errOutage
	}))
	require.NoError(t, a.Start(ctx))
	t.Cleanup(func() { _ = a.Shutdown(ctx) })
	require.NoError(t, a.Publish(ctx, "pay", 5))
	require.Eventually(t, cut.down.Load, 5*time.Second, 5*time.Millisecond, "instance a never ran its handler")

	// Instance b takes the row over when a's lease ends and completes it.
	b := newBus(store, "b", 2)
	require.NoError(t, cap.SubscribeTx(b, "pay", "ledger", func(ctx context.Context, tx *sql.Tx, m cap.Msg[int]) error {
		return effect(ctx, tx, "b", m.ID)
	}))
	require.NoError(t, b.Start(ctx))
	t.Cleanup(func() { _ = b.Shutdown(ctx) })
	require.Eventually(t, func() bool { return effects() == 1 }, 3*time.Second, 10*time.Millisecond,
		"instance b did not complete the row after a's lease ended")
	rows, _, err := store.List(ctx, storage.Received, storage.ListQuery{Group: "ledger.v1"})
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, storage.StatusSucceeded, rows[0].Status)

	// Instance a reaches its database again; its outcome writer still holds
	// the Failed outcome.
	cut.down.Store(false)
	require.Never(t, func() bool { return effects() > 1 }, 3*time.Second, 20*time.Millisecond,
		"instance a's late Failed outcome made the Succeeded row due again: the transactional handler's effect happened twice")
	r, err := store.Get(ctx, storage.Received, rows[0].ID)
	require.NoError(t, err)
	require.Equal(t, storage.StatusSucceeded, r.Status, "a late outcome overwrote Succeeded")
}

// rejections counts the deliveries the bus returned to the broker because
// it could not store them.
type rejections struct{ n atomic.Int32 }

func (r *rejections) Enabled(context.Context, slog.Level) bool { return true }
func (r *rejections) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *rejections) WithGroup(string) slog.Handler            { return r }
func (r *rejections) Handle(_ context.Context, rec slog.Record) error {
	if strings.Contains(rec.Message, "returned to the broker") {
		r.n.Add(1)
	}
	return nil
}

// A delivery whose text PostgreSQL cannot store is returned to the broker
// and delivered again, once a second, forever, and each return holds the
// group's storer for a second: a producer that sends Latin-1 inside a JSON
// string, or a NUL byte in a header, blocks a whole group. The Content
// column and the MessageId, Name and Group columns are text;
// message.EncodeContent writes a body that is JSON but not UTF-8 as it is
// (CAP would have failed to parse it and stored a data URI), and the
// consumer stores header values as they came. Such a message can never be
// stored as it is: it must be stored Failed (with its body as a data URI and
// its headers made valid), and acked.
func TestBugInvalidTextRedeliveredForever(t *testing.T) {
	dsn := getenv("CAP_TEST_POSTGRES", defaultDSN)
	amqpURL := getenv("CAP_TEST_RABBITMQ", defaultAMQP)
	for name, p := range map[string]amqp.Publishing{
		"latin-1 in a JSON body": {Body: []byte("{\"name\":\"caf\xe9\"}"),
			Headers: amqp.Table{message.HeaderMessageID: "u1", message.HeaderMessageName: "orders"}},
		"NUL in cap-msg-id": {Body: []byte(`{"name":"cafe"}`),
			Headers: amqp.Table{message.HeaderMessageID: "u\x002", message.HeaderMessageName: "orders"}},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			pool, err := pgxpool.New(ctx, dsn)
			require.NoError(t, err)
			t.Cleanup(pool.Close)
			if err := pool.Ping(ctx); err != nil {
				unavailable(t, "PostgreSQL at CAP_TEST_POSTGRES=%q is unreachable: %v", dsn, err)
			}
			id := strconv.FormatInt(time.Now().UnixNano(), 36)
			schema, exchange := "faulttest_bug_"+id, "faulttest.bug."+id
			t.Cleanup(func() { _, _ = pool.Exec(context.Background(), `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`) })
			store, err := postgres.New(pool, postgres.Options{Schema: schema})
			require.NoError(t, err)
			tr, err := rabbitmq.New(rabbitmq.Config{URL: amqpURL, ExchangeName: exchange})
			require.NoError(t, err)
			t.Cleanup(func() { _ = tr.Close() })
			var returned rejections
			wid := int64(4)
			bus, err := cap.New(store, tr, cap.Options{GroupNamePrefix: exchange, WorkerID: &wid, Logger: slog.New(&returned)})
			require.NoError(t, err)
			require.NoError(t, cap.Subscribe(bus, "orders", "g", func(ctx context.Context, m cap.Msg[[]byte]) error { return nil }))
			require.NoError(t, bus.Start(ctx))
			t.Cleanup(func() {
				_ = bus.Shutdown(context.Background())
				if conn, err := amqp.Dial(amqpURL); err == nil {
					if ch, err := conn.Channel(); err == nil {
						_, _ = ch.QueueDelete(exchange+".g.v1", false, false, false)
						_ = ch.ExchangeDelete(exchange, false, false)
					}
					_ = conn.Close()
				}
			})

			conn, err := amqp.Dial(amqpURL)
			if err != nil {
				unavailable(t, "RabbitMQ at CAP_TEST_RABBITMQ=%q is unreachable: %v", amqpURL, err)
			}
			defer conn.Close()
			ch, err := conn.Channel()
			require.NoError(t, err)
			require.NoError(t, ch.PublishWithContext(ctx, exchange, "orders", false, false, p))
			require.Never(t, func() bool { return returned.n.Load() > 1 }, 4*time.Second, 50*time.Millisecond,
				"a message whose text PostgreSQL refuses is returned to the broker and delivered again, forever")
		})
	}
}

// A string payload that reads as a data URI ("data:image/png;base64,...",
// a common way to carry an image in JSON) changes on its way when the row
// is read back from the table (a plain tx.Commit, a retry, a crashed
// instance's row): message.DecodeContent takes every "data:...;base64,"
// string Value for a body CAP stored as a data URI, and returns the decoded
// bytes instead of the JSON string. The subscriber then gets the image bytes
// and its typed handler fails for good ("decode string payload").
func TestBugDataURIStringPayloadDecoded(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "cap.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	store, err := sqlite.New(db, sqlite.Options{})
	require.NoError(t, err)
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	wid := int64(5)
	bus, err := cap.New(store, tr, cap.Options{PollInterval: 20 * time.Millisecond, WorkerID: &wid,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	got := make(chan string, 1)
	require.NoError(t, cap.Subscribe(bus, "avatar.uploaded", "g", func(ctx context.Context, m cap.Msg[string]) error {
		got <- m.Payload
		return nil
	}))
	require.NoError(t, bus.Start(ctx))
	t.Cleanup(func() { _ = bus.Shutdown(ctx) })

	const avatar = "data:image/png;base64,iVBORw0KGgo="
	tx, err := store.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, bus.PublishTx(ctx, tx, "avatar.uploaded", avatar))
	require.NoError(t, tx.Commit()) // a plain commit: the poll reads the row back
	select {
	case s := <-got:
		require.Equal(t, avatar, s)
	case <-time.After(3 * time.Second):
		rows, _, err := store.List(ctx, storage.Received, storage.ListQuery{})
		require.NoError(t, err)
		for _, r := range rows {
			m, err := message.DecodeContent(r.Content)
			require.NoError(t, err)
			t.Logf("received row %s: body %q, %s", r.Status, m.Body, m.Exception())
		}
		t.Fatal("the string payload never reached its handler")
	}
}

// message.ParseDelay accepts days up to 106751, but 106751 days and more
// than 23:47:16.8547758 overflow time.Duration: a positive cap-delaytime
// parses as a negative delay, with no error.
func TestBugParseDelayOverflows(t *testing.T) {
	for _, s := range []string{"106751.23:59:59", "106751.23:47:16.8547759"} {
		d, err := message.ParseDelay(s)
		if err == nil {
			require.Positive(t, d, "ParseDelay(%q)", s)
		}
	}
}

// EncodeContent keeps the header "go-cap-body" for its data-URI mark and
// drops any such header of the message, but DecodeContent keeps one that
// holds another value: a stored row read back and written again loses it.
// Either both should treat the name as reserved, or neither.
func TestBugReservedContentHeader(t *testing.T) {
	m, err := message.DecodeContent([]byte(`{"Headers":{"go-cap-body":"x"},"Value":1}`))
	require.NoError(t, err)
	enc, err := message.EncodeContent(m)
	require.NoError(t, err)
	again, err := message.DecodeContent(enc)
	require.NoError(t, err)
	require.Equal(t, m.Headers, again.Headers, "a row decoded, encoded and decoded again changed its headers")
}

// flaky is a storage that fails the next few Received inserts, as a
// database that is restarting does.
type flaky struct {
	storage.Storage[*sql.Tx]
	fails atomic.Int32
}

var errStartingUp = errors.New("FATAL: the database system is starting up (SQLSTATE 57P03)")

func (f *flaky) InsertReceivedBatch(ctx context.Context, recs []*storage.Record) ([]bool, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, errStartingUp
	}
	return f.Storage.InsertReceivedBatch(ctx, recs)
}

func (f *flaky) InsertReceived(ctx context.Context, rec *storage.Record) (bool, error) {
	if f.fails.Add(-1) >= 0 {
		return false, errStartingUp
	}
	return f.Storage.InsertReceived(ctx, rec)
}

// A delivery that arrives while the database restarts is stored Failed for
// good ("StorageRefusedException") and acked: the message is lost. Since
// 6646dfb the consumer takes a Received insert that fails twice (the second
// time 50 ms after the first) for a message the database can never hold,
// and stores it Failed with the retries used up as soon as a third insert,
// that of the Failed row, succeeds. A database that is starting up, a
// dropped connection or a deadlock fails the same way, and recovers within
// that window often enough: the fault harness lost a message like this in
// its "all" scenario (lost=1 across a PostgreSQL restart). A transient
// failure must return the delivery to the broker, as before.
func TestBugTransientInsertFailureFailsMessageForGood(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "cap.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	store, err := sqlite.New(db, sqlite.Options{})
	require.NoError(t, err)
	restarting := &flaky{Storage: store}
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	wid := int64(6)
	bus, err := cap.New(restarting, tr, cap.Options{PollInterval: 20 * time.Millisecond, WorkerID: &wid,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	handled := make(chan cap.Msg[int], 1)
	require.NoError(t, cap.Subscribe(bus, "orders", "billing", func(ctx context.Context, m cap.Msg[int]) error {
		handled <- m
		return nil
	}))
	require.NoError(t, bus.Start(ctx))
	t.Cleanup(func() { _ = bus.Shutdown(ctx) })

	// The batch insert, the one-by-one insert and its retry 50 ms later
	// fail; the database answers again right after.
	restarting.fails.Store(3)
	require.NoError(t, bus.Publish(ctx, "orders", 42))
	select {
	case m := <-handled:
		require.Equal(t, 42, m.Payload)
	case <-time.After(5 * time.Second):
		rows, _, err := store.List(ctx, storage.Received, storage.ListQuery{})
		require.NoError(t, err)
		for _, r := range rows {
			m, err := message.DecodeContent(r.Content)
			require.NoError(t, err)
			t.Logf("received row %s, retries %d, next attempt %v: %s", r.Status, r.Retries, r.NextAttemptAt, m.Exception())
		}
		t.Fatal("a message that arrived while the database was restarting was never handled")
	}
}
