package cap_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/internal/testwait"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/memory"
	"github.com/go-cap/cap/storage/sqlite"
	"github.com/go-cap/cap/transport"
	memtr "github.com/go-cap/cap/transport/memory"
)

type order struct {
	ID   int    `json:"id"`
	Item string `json:"item"`
}

type bundle struct {
	db    *sql.DB
	store *sqlite.Storage
	polls *pollCounter // store, counting claims: the buses run on it
	tr    *memtr.Transport
	bus   *cap.Bus[*sql.Tx]
	opts  cap.Options
}

// pollCounter is the SQLite storage with its claims counted, so a test can
// wait for the bus's pollers to have looked for due rows a number of times
// instead of sleeping. Embedding the concrete storage keeps every optional
// interface it implements.
type pollCounter struct {
	*sqlite.Storage
	claims [2]atomic.Int64 // by storage.Table
}

func (p *pollCounter) Claim(ctx context.Context, t storage.Table, req storage.ClaimRequest) ([]*storage.Record, error) {
	recs, err := p.Storage.Claim(ctx, t, req)
	p.claims[t].Add(1)
	return recs, err
}

// waitPolls waits until the table has been claimed from n more times.
func (b *bundle) waitPolls(t *testing.T, tbl storage.Table, n int64) {
	t.Helper()
	from := b.polls.claims[tbl].Load()
	eventually(t, 10*time.Second, func() bool { return b.polls.claims[tbl].Load() >= from+n },
		"%d more claims of %s", n, tbl)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// setup returns a bus over a fresh SQLite file and an in-memory broker. It is
// not started; start it with bundle.start after subscribing.
func setup(t *testing.T, opts cap.Options) *bundle {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "cap.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	store, err := sqlite.New(db, sqlite.Options{})
	require.NoError(t, err)
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 50 * time.Millisecond
	}
	wid := int64(1)
	opts.WorkerID = &wid
	polls := &pollCounter{Storage: store}
	bus, err := cap.New[*sql.Tx](polls, tr, opts)
	require.NoError(t, err)
	return &bundle{db: db, store: store, polls: polls, tr: tr, bus: bus, opts: opts}
}

func (b *bundle) start(t *testing.T) {
	t.Helper()
	require.NoError(t, b.bus.Start(context.Background()))
	t.Cleanup(func() { _ = b.bus.Shutdown(context.Background()) })
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	testwait.Until(t, d, cond, msg, args...)
}

// recv waits for a value on ch, failing the test after 20 s instead of
// hanging it.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting on %T", ch)
		panic("unreachable")
	}
}

// received returns the Received rows of a group.
func received(t *testing.T, s storage.Storage[*sql.Tx], group string) []*storage.Record {
	t.Helper()
	recs, _, err := s.List(context.Background(), storage.Received, storage.ListQuery{Group: group, Limit: 100000})
	require.NoError(t, err)
	return recs
}

func TestPublishReachesEveryGroup(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{})
	var mu sync.Mutex
	got := map[string][]order{}
	for _, g := range []string{"billing", "shipping"} {
		require.NoError(t, cap.Subscribe(b.bus, "order.created", g, func(ctx context.Context, m cap.Msg[order]) error {
			mu.Lock()
			defer mu.Unlock()
			got[m.Group] = append(got[m.Group], m.Payload)
			return nil
		}))
	}
	b.start(t)
	require.NoError(t, b.bus.Publish(context.Background(), "order.created", order{ID: 7, Item: "book"}))
	eventually(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got["billing.v1"]) == 1 && len(got["shipping.v1"]) == 1
	}, "both groups handle the message")
	require.Equal(t, order{ID: 7, Item: "book"}, got["billing.v1"][0])

	pub, _, err := b.store.List(context.Background(), storage.Published, storage.ListQuery{})
	require.NoError(t, err)
	require.Len(t, pub, 1)
	eventually(t, 5*time.Second, func() bool {
		r, err := b.store.Get(context.Background(), storage.Published, pub[0].ID)
		return err == nil && r.Status == storage.StatusSucceeded
	}, "published row Succeeded")
	r, _ := b.store.Get(context.Background(), storage.Published, pub[0].ID)
	require.NotNil(t, r.ExpiresAt)
	require.WithinDuration(t, time.Now().Add(24*time.Hour), *r.ExpiresAt, time.Minute)
	m, err := message.DecodeContent(r.Content)
	require.NoError(t, err)
	require.Equal(t, strconv.FormatInt(r.ID, 10), m.ID())
	require.Equal(t, m.ID(), m.CorrelationID())
	require.Equal(t, "0", m.Headers[message.HeaderCorrelationSequence])
	require.Equal(t, "order", m.Headers[message.HeaderType])
	_, err = message.ParseSentTime(m.Headers[message.HeaderSentTime])
	require.NoError(t, err)
}

func TestRolledBackNeverDelivered(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{})
	var handled sync.Map
	require.NoError(t, cap.Subscribe(b.bus, "t", "g", func(ctx context.Context, m cap.Msg[int]) error {
		handled.Store(m.Payload, true)
		return nil
	}))
	b.start(t)
	ctx := context.Background()
	// Rolled back through InTx, and through a plain tx.
	errBusiness := errors.New("business rule")
	err := b.bus.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		require.NoError(t, b.bus.PublishTx(ctx, tx, "t", 1))
		return errBusiness
	})
	require.ErrorIs(t, err, errBusiness)
	tx, err := b.db.Begin()
	require.NoError(t, err)
	require.NoError(t, b.bus.PublishTx(ctx, tx, "t", 2))
	require.NoError(t, tx.Rollback())
	// A committed one, after the rolled-back ones, through a plain commit.
	tx, err = b.db.Begin()
	require.NoError(t, err)
	require.NoError(t, b.bus.PublishTx(ctx, tx, "t", 3))
	require.NoError(t, tx.Commit())
	eventually(t, 5*time.Second, func() bool { _, ok := handled.Load(3); return ok }, "committed message handled")
	// Let the dispatcher poll a few more times before checking.
	b.waitPolls(t, storage.Published, 3)
	_, ok1 := handled.Load(1)
	_, ok2 := handled.Load(2)
	require.False(t, ok1 || ok2, "rolled-back messages must never be delivered")
	pub, total, err := b.store.List(ctx, storage.Published, storage.ListQuery{})
	require.NoError(t, err)
	require.EqualValues(t, 1, total, "only the committed row exists: %v", pub)
}

// 1,000 messages published concurrently, half through Publish and half
// through InTx, are each handled exactly once per group: on the in-memory
// storage with 16 writers, and on SQLite (a single writer at a time) with 4.
func TestConcurrentPublishHandledOncePerGroup(t *testing.T) {
	t.Parallel()
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		tr := memtr.New()
		t.Cleanup(func() { _ = tr.Close() })
		wid := int64(6)
		bus, err := cap.New(memory.New(), tr, cap.Options{Logger: quietLogger(), WorkerID: &wid, PollInterval: 50 * time.Millisecond})
		require.NoError(t, err)
		concurrentOncePerGroup(t, bus, 16)
	})
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		concurrentOncePerGroup(t, setup(t, cap.Options{}).bus, 4)
	})
}

func concurrentOncePerGroup[TTx any](t *testing.T, bus *cap.Bus[TTx], writers int) {
	const n = 1000
	var counts [2][n]atomic.Int32
	for gi, g := range []string{"a", "b"} {
		require.NoError(t, cap.Subscribe(bus, "load", g, func(ctx context.Context, m cap.Msg[int]) error {
			counts[gi][m.Payload].Add(1)
			return nil
		}))
	}
	require.NoError(t, bus.Start(context.Background()))
	t.Cleanup(func() { _ = bus.Shutdown(context.Background()) })
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += writers {
				var err error
				if i%2 == 0 {
					err = bus.Publish(ctx, "load", i)
				} else {
					err = bus.InTx(ctx, func(ctx context.Context, tx TTx) error {
						return bus.PublishTx(ctx, tx, "load", i)
					})
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	eventually(t, 60*time.Second, func() bool {
		for g := range 2 {
			for i := range n {
				if counts[g][i].Load() == 0 {
					return false
				}
			}
		}
		return true
	}, "every message handled in both groups")
	for g := range 2 {
		for i := range n {
			require.EqualValues(t, 1, counts[g][i].Load(), "group %d message %d", g, i)
		}
	}
}

func TestFailTwiceThenSucceed(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{})
	var calls atomic.Int32
	done := make(chan cap.Msg[string], 1)
	require.NoError(t, cap.Subscribe(b.bus, "flaky", "g", func(ctx context.Context, m cap.Msg[string]) error {
		if calls.Add(1) <= 2 {
			return errors.New("not yet")
		}
		done <- m
		return nil
	}))
	b.start(t)
	require.NoError(t, b.bus.Publish(context.Background(), "flaky", "x"))
	m := recv(t, done)
	require.Equal(t, 2, m.Retries)
	eventually(t, 5*time.Second, func() bool {
		rs := received(t, b.store, "g.v1")
		return len(rs) == 1 && rs[0].Status == storage.StatusSucceeded
	}, "received row Succeeded")
	rs := received(t, b.store, "g.v1")
	require.Equal(t, 2, rs[0].Retries)
	require.Nil(t, rs[0].NextAttemptAt)
}

func TestRetryAfterIntervalThenCallbackOnce(t *testing.T) {
	t.Parallel()
	var failed atomic.Int32
	var info cap.FailedInfo
	var infoMu sync.Mutex
	b := setup(t, cap.Options{
		RetryPolicy: retry.CAP{MaxRetries: 5, Interval: 30 * time.Millisecond},
		FailedThresholdCallback: func(ctx context.Context, fi cap.FailedInfo) {
			infoMu.Lock()
			info = fi
			infoMu.Unlock()
			failed.Add(1)
		},
	})
	var calls atomic.Int32
	require.NoError(t, cap.Subscribe(b.bus, "doomed", "g", func(ctx context.Context, m cap.Msg[string]) error {
		calls.Add(1)
		return errors.New("always")
	}))
	b.start(t)
	require.NoError(t, b.bus.Publish(context.Background(), "doomed", "x"))
	eventually(t, 10*time.Second, func() bool { return failed.Load() == 1 }, "failure callback")
	rs := received(t, b.store, "g.v1")
	require.Len(t, rs, 1)
	eventually(t, 5*time.Second, func() bool {
		r, err := b.store.Get(context.Background(), storage.Received, rs[0].ID)
		return err == nil && r.Retries == 5 && r.Status == storage.StatusFailed
	}, "row Failed with 5 retries")
	r, _ := b.store.Get(context.Background(), storage.Received, rs[0].ID)
	require.Nil(t, r.NextAttemptAt, "no attempt after the last")
	m, err := message.DecodeContent(r.Content)
	require.NoError(t, err)
	require.Equal(t, "SubscriberExecutionFailedException-->always", m.Exception())
	// Poll a few more rounds: no more attempts, no second callback.
	b.waitPolls(t, storage.Received, 3)
	require.EqualValues(t, 5, calls.Load())
	require.EqualValues(t, 1, failed.Load())
	infoMu.Lock()
	require.Equal(t, cap.KindSubscribe, info.Kind)
	require.EqualError(t, info.Err, "always")
	infoMu.Unlock()
}

func TestDelayedNotBeforeItsTime(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{PollInterval: time.Second})
	got := make(chan time.Time, 2)
	require.NoError(t, cap.Subscribe(b.bus, "later", "g", func(ctx context.Context, m cap.Msg[string]) error {
		got <- time.Now()
		return nil
	}))
	b.start(t)
	start := time.Now()
	const delay = 400 * time.Millisecond
	require.NoError(t, b.bus.PublishDelay(context.Background(), delay, "later", "x"))
	pub, _, err := b.store.List(context.Background(), storage.Published, storage.ListQuery{})
	require.NoError(t, err)
	require.Equal(t, storage.StatusDelayed, pub[0].Status)
	m, err := message.DecodeContent(pub[0].Content)
	require.NoError(t, err)
	require.Equal(t, "00:00:00.4000000", m.Headers[message.HeaderDelayTime])
	at := recv(t, got)
	require.GreaterOrEqual(t, at.Sub(start), delay, "handled before its time")
	require.Less(t, at.Sub(start), delay+900*time.Millisecond, "woken by its timer, not the 1 s poll")
}

func TestReplyGoesToCallback(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{})
	type ack struct{ OK bool }
	require.NoError(t, cap.SubscribeReply(b.bus, "order.pay", "payments", func(ctx context.Context, m cap.Msg[order]) (ack, error) {
		return ack{OK: m.Payload.ID == 9}, nil
	}))
	replies := make(chan cap.Msg[ack], 1)
	require.NoError(t, cap.Subscribe(b.bus, "order.paid", "orders", func(ctx context.Context, m cap.Msg[ack]) error {
		replies <- m
		return nil
	}))
	b.start(t)
	var parentID string
	require.NoError(t, b.bus.Publish(context.Background(), "order.pay", order{ID: 9}, cap.WithCallback("order.paid"), cap.WithID("123456789")))
	parentID = "123456789"
	r := recv(t, replies)
	require.True(t, r.Payload.OK)
	require.Equal(t, parentID, r.Headers[message.HeaderCorrelationID])
	require.Equal(t, "1", r.Headers[message.HeaderCorrelationSequence])
	require.NotEqual(t, parentID, r.ID)
}

func TestHandlerPanicFailsMessage(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{RetryPolicy: retry.CAP{MaxRetries: 1}})
	require.NoError(t, cap.Subscribe(b.bus, "boom", "g", func(ctx context.Context, m cap.Msg[string]) error {
		panic("kaboom")
	}))
	b.start(t)
	require.NoError(t, b.bus.Publish(context.Background(), "boom", "x"))
	eventually(t, 5*time.Second, func() bool {
		rs := received(t, b.store, "g.v1")
		return len(rs) == 1 && rs[0].Status == storage.StatusFailed
	}, "row Failed")
	m, err := message.DecodeContent(received(t, b.store, "g.v1")[0].Content)
	require.NoError(t, err)
	require.Equal(t, "SubscriberExecutionFailedException-->panic: kaboom", m.Exception())
}

func TestBadBodyFailsWithoutRetry(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{})
	var calls atomic.Int32
	require.NoError(t, cap.Subscribe(b.bus, "typed", "g", func(ctx context.Context, m cap.Msg[order]) error {
		calls.Add(1)
		return nil
	}))
	b.start(t)
	require.NoError(t, b.bus.Publish(context.Background(), "typed", []byte(`{"id":"not a number"`)))
	eventually(t, 5*time.Second, func() bool {
		rs := received(t, b.store, "g.v1")
		return len(rs) == 1 && rs[0].Status == storage.StatusFailed
	}, "row Failed")
	r := received(t, b.store, "g.v1")[0]
	require.Equal(t, 1, r.Retries)
	require.Nil(t, r.NextAttemptAt)
	require.Zero(t, calls.Load())
	m, err := message.DecodeContent(r.Content)
	require.NoError(t, err)
	require.Contains(t, m.Exception(), "decode")
	require.Equal(t, `{"id":"not a number"`, string(m.Body), "the body is kept for the dashboard")
}

func TestForeignMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("without hook it is stored Failed and acked", func(t *testing.T) {
		t.Parallel()
		b := setup(t, cap.Options{})
		require.NoError(t, cap.Subscribe(b.bus, "ext", "g", func(ctx context.Context, m cap.Msg[string]) error { return nil }))
		b.start(t)
		// A producer that does not speak CAP: only the topic travels.
		require.NoError(t, b.tr.Send(ctx, &message.Message{Headers: message.Headers{message.HeaderMessageName: "ext"}, Body: []byte(`"hi"`)}))
		eventually(t, 5*time.Second, func() bool { return len(received(t, b.store, "g.v1")) == 1 }, "stored")
		r := received(t, b.store, "g.v1")[0]
		require.Equal(t, storage.StatusFailed, r.Status)
		require.Nil(t, r.NextAttemptAt)
		m, err := message.DecodeContent(r.Content)
		require.NoError(t, err)
		require.Contains(t, m.Exception(), "cap-msg-id")
	})
	t.Run("the hook supplies headers", func(t *testing.T) {
		t.Parallel()
		got := make(chan cap.Msg[string], 1)
		b := setup(t, cap.Options{CustomHeaders: func(d transport.Delivery) message.Headers {
			return message.Headers{message.HeaderMessageID: "ext-1", message.HeaderMessageName: d.Topic()}
		}})
		require.NoError(t, cap.Subscribe(b.bus, "ext", "g", func(ctx context.Context, m cap.Msg[string]) error {
			got <- m
			return nil
		}))
		b.start(t)
		require.NoError(t, b.tr.Send(ctx, &message.Message{Headers: message.Headers{message.HeaderMessageName: "ext"}, Body: []byte(`"hi"`)}))
		m := recv(t, got)
		require.Equal(t, "hi", m.Payload)
		require.Equal(t, "ext-1", m.ID)
	})
}

func TestDuplicateDeliveryHandledOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{})
	var effects atomic.Int32
	seen := make(chan struct{}, 10)
	require.NoError(t, cap.SubscribeTx(b.bus, "pay", "ledger", func(ctx context.Context, tx *sql.Tx, m cap.Msg[int]) error {
		effects.Add(1)
		seen <- struct{}{}
		return nil
	}))
	b.start(t)
	ctx := context.Background()
	msg := &message.Message{Headers: message.Headers{message.HeaderMessageID: "42", message.HeaderMessageName: "pay"}, Body: []byte(`5`)}
	for range 3 {
		require.NoError(t, b.tr.Send(ctx, msg))
	}
	recv(t, seen)
	eventually(t, 5*time.Second, func() bool {
		rs := received(t, b.store, "ledger.v1")
		return len(rs) == 1 && rs[0].Status == storage.StatusSucceeded
	}, "one Succeeded row")
	// A message sent after the copies is handled after they were taken
	// from the broker (one consumer, delivered in order).
	require.NoError(t, b.tr.Send(ctx, &message.Message{Headers: message.Headers{
		message.HeaderMessageID: "43", message.HeaderMessageName: "pay"}, Body: []byte(`6`)}))
	recv(t, seen)
	require.EqualValues(t, 2, effects.Load(), "the copies had no effect")
}

// The inbox: the handler's writes and the Received row's status commit
// together; a failure rolls both back.
func TestTransactionalHandler(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{RetryPolicy: retry.CAP{MaxRetries: 3, ImmediateAttempts: -1, Interval: 20 * time.Millisecond}})
	_, err := b.db.Exec(`CREATE TABLE ledger (msg TEXT, amount INTEGER)`)
	require.NoError(t, err)
	var calls atomic.Int32
	require.NoError(t, cap.SubscribeTx(b.bus, "pay", "ledger", func(ctx context.Context, tx *sql.Tx, m cap.Msg[int]) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO ledger VALUES (?, ?)`, m.ID, m.Payload); err != nil {
			return err
		}
		if calls.Add(1) == 1 {
			return errors.New("fails after writing") // must roll the write back
		}
		return nil
	}))
	b.start(t)
	require.NoError(t, b.bus.Publish(context.Background(), "pay", 10))
	eventually(t, 5*time.Second, func() bool {
		rs := received(t, b.store, "ledger.v1")
		return len(rs) == 1 && rs[0].Status == storage.StatusSucceeded
	}, "Succeeded")
	var n, sum int
	require.NoError(t, b.db.QueryRow(`SELECT COUNT(*), COALESCE(SUM(amount),0) FROM ledger`).Scan(&n, &sum))
	require.Equal(t, 1, n)
	require.Equal(t, 10, sum)
}

// A handler interrupted by Shutdown is not marked Succeeded, and a new bus
// on the same database and broker handles the message: with StoreFirst
// from its row (Scheduled, due at once), without it from the broker, to
// which the delivery of a plain handler's message whose row was not
// written yet goes back.
func TestShutdownInterruptsWithoutSuccess(t *testing.T) {
	t.Parallel()
	for _, storeFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("StoreFirst=%v", storeFirst), func(t *testing.T) {
			t.Parallel()
			b := setup(t, cap.Options{StoreFirst: storeFirst})
			started := make(chan struct{})
			require.NoError(t, cap.Subscribe(b.bus, "slow", "g", func(ctx context.Context, m cap.Msg[string]) error {
				close(started)
				<-ctx.Done()
				return ctx.Err()
			}))
			require.NoError(t, b.bus.Start(context.Background()))
			require.NoError(t, b.bus.Publish(context.Background(), "slow", "x"))
			recv(t, started)
			sctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			err := b.bus.Shutdown(sctx)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			rs := received(t, b.store, "g.v1")
			if storeFirst {
				require.Len(t, rs, 1)
				require.NotEqual(t, storage.StatusSucceeded, rs[0].Status)
				require.Equal(t, 0, rs[0].Retries, "an interruption is not a failure")
			} else {
				require.Empty(t, rs, "no row: the delivery went back to the broker")
			}
			require.NoError(t, b.bus.Shutdown(context.Background()), "second Shutdown is harmless")

			// The next instance (same database and broker) handles it.
			wid := int64(7)
			next, err := cap.New[*sql.Tx](b.store, b.tr, cap.Options{Logger: quietLogger(), WorkerID: &wid,
				StoreFirst: storeFirst, PollInterval: 20 * time.Millisecond})
			require.NoError(t, err)
			done := make(chan struct{})
			require.NoError(t, cap.Subscribe(next, "slow", "g", func(ctx context.Context, m cap.Msg[string]) error {
				close(done)
				return nil
			}))
			require.NoError(t, next.Start(context.Background()))
			t.Cleanup(func() { _ = next.Shutdown(context.Background()) })
			recv(t, done)
		})
	}
}

func TestSubscribeErrors(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{GroupNamePrefix: "p", TopicNamePrefix: "svc", Version: "v2"})
	h := func(ctx context.Context, m cap.Msg[string]) error { return nil }
	require.NoError(t, cap.Subscribe(b.bus, "a.b", "g", h))
	require.ErrorIs(t, cap.Subscribe(b.bus, "a.b", "g", h), cap.ErrDuplicateSubscriber)
	require.ErrorIs(t, cap.Subscribe(b.bus, "", "g", h), cap.ErrInvalidTopic)
	require.NoError(t, cap.Subscribe(b.bus, "a.*", "", h))
	groups := b.bus.Groups()
	require.Equal(t, []string{"svc.a.b"}, groups["p.g.v2"])
	require.Contains(t, groups, "p."+b.bus.Options().DefaultGroup+".v2")
	b.start(t)
	require.ErrorIs(t, cap.Subscribe(b.bus, "c", "g", h), cap.ErrStarted)
	require.ErrorIs(t, b.bus.Start(context.Background()), cap.ErrStarted)
	require.ErrorIs(t, b.bus.Publish(context.Background(), "", 1), cap.ErrInvalidTopic)

	_, err := cap.New(b.store, b.tr, cap.Options{Version: "this-version-is-far-too-long"})
	require.ErrorIs(t, err, cap.ErrInvalidOptions)
}

func TestWildcardSubscription(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{})
	got := make(chan string, 10)
	require.NoError(t, cap.Subscribe(b.bus, "order.*", "g", func(ctx context.Context, m cap.Msg[string]) error {
		got <- m.Topic
		return nil
	}))
	require.NoError(t, cap.Subscribe(b.bus, "order.created", "g", func(ctx context.Context, m cap.Msg[string]) error {
		got <- "exact:" + m.Topic
		return nil
	}))
	b.start(t)
	ctx := context.Background()
	require.NoError(t, b.bus.Publish(ctx, "order.created", "x"))
	require.Equal(t, "exact:order.created", recv(t, got))
	require.NoError(t, b.bus.Publish(ctx, "order.paid", "x"))
	require.Equal(t, "order.paid", recv(t, got))
}

func TestRawHandlerGetsBodyAndHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{})
	got := make(chan cap.Msg[[]byte], 1)
	require.NoError(t, cap.Subscribe(b.bus, "raw", "g", func(ctx context.Context, m cap.Msg[[]byte]) error {
		got <- m
		return nil
	}))
	b.start(t)
	body := []byte{0, 1, 2, 250, 255}
	require.NoError(t, b.bus.Publish(context.Background(), "raw", body, cap.WithHeaders(map[string]string{"x-tenant": "acme"})))
	m := recv(t, got)
	require.Equal(t, body, m.Payload)
	require.Equal(t, "acme", m.Headers["x-tenant"])
	require.Equal(t, "g.v1", m.Headers[message.HeaderGroup])
}

// A handler that runs longer than the lease keeps its row: the lease is
// extended, so no instance (this one included) runs it a second time.
func TestLongHandlerKeepsItsLease(t *testing.T) {
	t.Parallel()
	const lease = time.Second
	b := setup(t, cap.Options{Lease: lease, PollInterval: 10 * time.Millisecond})
	var calls atomic.Int32
	done := make(chan struct{})
	handler := func(ctx context.Context, m cap.Msg[string]) error {
		if calls.Add(1) == 1 {
			// Time, not an event: the subject of the test is a handler outliving its lease.
			time.Sleep(3 * lease)
			close(done)
		}
		return nil
	}
	require.NoError(t, cap.Subscribe(b.bus, "slow", "g", handler))
	// A second instance of the same service polls for due rows all along.
	wid := int64(7)
	other, err := cap.New[*sql.Tx](b.polls, b.tr, cap.Options{Lease: lease, PollInterval: 10 * time.Millisecond, WorkerID: &wid, Logger: quietLogger()})
	require.NoError(t, err)
	require.NoError(t, cap.Subscribe(other, "slow", "g", handler))
	b.start(t)
	require.NoError(t, other.Start(context.Background()))
	t.Cleanup(func() { _ = other.Shutdown(context.Background()) })
	require.NoError(t, b.bus.Publish(context.Background(), "slow", "x"))
	recv(t, done)
	eventually(t, 5*time.Second, func() bool {
		rs := received(t, b.store, "g.v1")
		return len(rs) == 1 && rs[0].Status == storage.StatusSucceeded
	}, "Succeeded")
	// Both instances poll for due rows again after the success.
	b.waitPolls(t, storage.Received, 10)
	require.EqualValues(t, 1, calls.Load())
	require.Nil(t, received(t, b.store, "g.v1")[0].NextAttemptAt)
}

// An instance without handlers for a group leaves that group's rows alone:
// a publisher-only service sharing the database must not fail them.
func TestInstanceClaimsOnlyItsGroups(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{})
	wid := int64(3)
	publisherOnly, err := cap.New[*sql.Tx](b.polls, b.tr, cap.Options{Logger: quietLogger(), PollInterval: 10 * time.Millisecond, WorkerID: &wid})
	require.NoError(t, err)
	require.NoError(t, publisherOnly.Start(context.Background()))
	defer publisherOnly.Shutdown(context.Background())

	// A Received row of group g.v1 that is due: left by a crashed consumer.
	content, err := message.EncodeContent(&message.Message{Headers: message.Headers{
		message.HeaderMessageID: "77", message.HeaderMessageName: "orphan", message.HeaderGroup: "g.v1"}, Body: []byte(`"x"`)})
	require.NoError(t, err)
	rec := &storage.Record{ID: 9001, Version: "v1", Name: "orphan", Group: "g.v1", MessageID: "77", Content: content}
	ok, err := b.store.InsertReceived(context.Background(), rec)
	require.NoError(t, err)
	require.True(t, ok)
	b.waitPolls(t, storage.Published, 20) // twenty polls of the publisher-only instance
	r, err := b.store.Get(context.Background(), storage.Received, rec.ID)
	require.NoError(t, err)
	require.Equal(t, storage.StatusScheduled, r.Status, "another service's row was touched")
	require.NotNil(t, r.NextAttemptAt)

	// The group's own instance handles it.
	done := make(chan string, 1)
	require.NoError(t, cap.Subscribe(b.bus, "orphan", "g", func(ctx context.Context, m cap.Msg[string]) error {
		done <- m.ID
		return nil
	}))
	b.start(t)
	require.Equal(t, "77", recv(t, done))
}

// refusing is a storage whose database refuses Scheduled Received rows of
// one message id, as PostgreSQL refuses text it cannot hold.
type refusing struct {
	*sqlite.Storage
	id string
}

var errRefused = fmt.Errorf("invalid byte sequence for encoding: %w", storage.ErrRefused)

func (r refusing) InsertReceivedBatch(ctx context.Context, recs []*storage.Record) ([]bool, error) {
	for _, rec := range recs {
		if rec.MessageID == r.id && rec.Status != storage.StatusFailed {
			return nil, errRefused
		}
	}
	return r.Storage.InsertReceivedBatch(ctx, recs)
}

func (r refusing) InsertReceived(ctx context.Context, rec *storage.Record) (bool, error) {
	if rec.MessageID == r.id && rec.Status != storage.StatusFailed {
		return false, errRefused
	}
	return r.Storage.InsertReceived(ctx, rec)
}

// A message the database cannot store, or whose key headers are not text,
// is stored as Failed and acked: never redelivered in a loop, and the
// messages around it are handled.
func TestUnstorableMessageFailsOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{})
	wid := int64(4)
	var failures sync.Map // message id -> *atomic.Int32
	bus, err := cap.New[*sql.Tx](refusing{Storage: b.store, id: "refused"}, b.tr, cap.Options{Logger: quietLogger(), WorkerID: &wid,
		FailedThresholdCallback: func(ctx context.Context, fi cap.FailedInfo) {
			n, _ := failures.LoadOrStore(fi.Message.ID(), new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
		}})
	require.NoError(t, err)
	var handled sync.Map
	require.NoError(t, cap.Subscribe(bus, "t", "g", func(ctx context.Context, m cap.Msg[string]) error {
		handled.Store(m.ID, true)
		return nil
	}))
	require.NoError(t, bus.Start(context.Background()))
	t.Cleanup(func() { _ = bus.Shutdown(context.Background()) })
	ctx := context.Background()
	for _, id := range []string{"before", "refused", "u\x00nul", "after"} {
		require.NoError(t, b.tr.Send(ctx, &message.Message{Headers: message.Headers{
			message.HeaderMessageID: id, message.HeaderMessageName: "t"}, Body: []byte(`"x"`)}))
	}
	eventually(t, 10*time.Second, func() bool {
		_, ok1 := handled.Load("before")
		_, ok2 := handled.Load("after")
		return ok1 && ok2 && len(received(t, b.store, "g.v1")) == 4
	}, "the good messages handled and the bad ones stored")
	byID := map[string]*storage.Record{}
	for _, r := range received(t, b.store, "g.v1") {
		byID[r.MessageID] = r
	}
	for id, want := range map[string]string{"refused": "StorageRefusedException-->", "unul": "MissingHeadersException-->header cap-msg-id is not valid text"} {
		r := byID[id]
		require.NotNil(t, r, "row of %q", id)
		require.Equal(t, storage.StatusFailed, r.Status)
		require.Nil(t, r.NextAttemptAt)
		m, err := message.DecodeContent(r.Content)
		require.NoError(t, err)
		require.Contains(t, m.Exception(), want)
	}
	// Acked once: a redelivery would report the failure again. A message
	// sent now comes after any redelivery (one consumer, in order).
	require.NoError(t, b.tr.Send(ctx, &message.Message{Headers: message.Headers{
		message.HeaderMessageID: "last", message.HeaderMessageName: "t"}, Body: []byte(`"x"`)}))
	eventually(t, 10*time.Second, func() bool { _, ok := handled.Load("last"); return ok }, "the last message handled")
	for _, id := range []string{"refused", "u\x00nul"} {
		n, ok := failures.Load(id)
		require.True(t, ok, "failure of %q reported", id)
		require.EqualValues(t, 1, n.(*atomic.Int32).Load(), "failure of %q reported once", id)
	}
}

// TestAbruptStopReturnsDeliveries: when the ctx given to Start ends (an
// abrupt stop, no Shutdown), the bus's broker consumers close, so that a
// delivery it holds unacked goes to another instance of the group at once,
// as a crashed process's connections would give it back, instead of
// waiting on a consumer nobody reads until the process ends.
func TestAbruptStopReturnsDeliveries(t *testing.T) {
	t.Parallel()
	a := setup(t, cap.Options{})
	running := make(chan struct{}, 1)
	require.NoError(t, cap.Subscribe(a.bus, "work", "g", func(ctx context.Context, m cap.Msg[string]) error {
		running <- struct{}{}
		<-ctx.Done() // holds the delivery until the abrupt stop
		return ctx.Err()
	}))
	runCtx, stop := context.WithCancel(context.Background())
	require.NoError(t, a.bus.Start(runCtx))
	t.Cleanup(func() { _ = a.bus.Shutdown(context.Background()) })

	wid := int64(2)
	b, err := cap.New[*sql.Tx](a.polls, a.tr, cap.Options{Logger: quietLogger(), PollInterval: 50 * time.Millisecond, WorkerID: &wid})
	require.NoError(t, err)
	done := make(chan string, 1)
	require.NoError(t, cap.Subscribe(b, "work", "g", func(ctx context.Context, m cap.Msg[string]) error {
		done <- m.Payload
		return nil
	}))

	require.NoError(t, a.bus.Publish(context.Background(), "work", "job"))
	recv(t, running) // a holds the delivery, unacked: its row is written with the outcome
	stop()
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(func() { _ = b.Shutdown(context.Background()) })
	require.Equal(t, "job", recv(t, done), "the other instance got the delivery back")
}
