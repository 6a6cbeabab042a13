package sqlserver_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/sqlserver"
	"github.com/go-cap/cap/transport"
	memtr "github.com/go-cap/cap/transport/memory"
)

// The bus tests of storage/postgres, on SQL Server: they need
// CAP_TEST_SQLSERVER. This storage has no notifications, so the bus finds
// plainly committed rows by polling.

type order struct {
	N int `json:"n"`
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func busOptions(o cap.Options) cap.Options {
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	wid := int64(7)
	o.WorkerID = &wid
	return o
}

// startBus starts b until the test ends.
func startBus[TTx any](t *testing.T, b *cap.Bus[TTx]) {
	t.Helper()
	require.NoError(t, b.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	})
}

// handled counts the handler runs per group and order number.
type handled struct {
	mu     sync.Mutex
	counts map[string]map[int]int
	first  map[int]time.Time
}

func newHandled() *handled {
	return &handled{counts: map[string]map[int]int{}, first: map[int]time.Time{}}
}

func (h *handled) add(group string, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.counts[group] == nil {
		h.counts[group] = map[int]int{}
	}
	h.counts[group][n]++
	if _, ok := h.first[n]; !ok {
		h.first[n] = time.Now()
	}
}

func (h *handled) distinct(group string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.counts[group])
}

func (h *handled) at(n int) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.first[n]
	return t, ok
}

// TestBusExactlyOncePerGroup: 5,000 messages published by 16 goroutines in
// business transactions, one in ten rolled back, half through InTx and half
// with a plain commit, are each handled exactly once by each of two groups;
// the rolled back ones never.
func TestBusExactlyOncePerGroup(t *testing.T) {
	const (
		total   = 5000
		writers = 16
	)
	ctx := context.Background()
	pool := openDB(t, 32)
	schema := newSchema(t)
	store, err := sqlserver.New(pool, sqlserver.Options{Schema: schema})
	require.NoError(t, err)
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	// A short lease, so lease renewals run many times during the test: a
	// renewal must never make a finished row due again.
	bus, err := cap.New(store, tr, busOptions(cap.Options{PollInterval: 100 * time.Millisecond, Lease: 900 * time.Millisecond}))
	require.NoError(t, err)
	h := newHandled()
	for _, g := range []string{"billing", "shipping"} {
		require.NoError(t, cap.Subscribe(bus, "order.created", g, func(ctx context.Context, m cap.Msg[order]) error {
			h.add(m.Group, m.Payload.N)
			return nil
		}))
	}
	startBus(t, bus)
	execSQL(t, `CREATE TABLE [`+schema+`].[orders] (n int PRIMARY KEY)`)

	insertOrder := `INSERT INTO [` + schema + `].[orders] (n) VALUES (@p1)`
	errRollback := errors.New("rolled back by the test")
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			for {
				n := int(next.Add(1))
				if n > total {
					return
				}
				var err error
				if w%2 == 0 {
					// Through the bus: handed to the dispatcher on commit.
					err = bus.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
						if _, err := tx.ExecContext(ctx, insertOrder, n); err != nil {
							return err
						}
						if err := bus.PublishTx(ctx, tx, "order.created", order{N: n}); err != nil {
							return err
						}
						if n%10 == 0 {
							return errRollback
						}
						return nil
					})
					if errors.Is(err, errRollback) {
						err = nil
					}
				} else {
					// A plain commit: found by polling.
					err = plainPublish(ctx, pool, bus, insertOrder, n, n%10 == 0)
				}
				if err != nil {
					errs <- fmt.Errorf("order %d: %w", n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	published := time.Since(start)

	const committed = total - total/10
	eventually(t, 60*time.Second, func() bool {
		return h.distinct("billing.v1") == committed && h.distinct("shipping.v1") == committed
	}, "every committed order handled by both groups")
	all := time.Since(start)
	// Let outcomes settle, then nothing is due and nothing ran twice.
	eventually(t, 30*time.Second, func() bool {
		pc, err := store.Counts(ctx, storage.Published)
		require.NoError(t, err)
		rc, err := store.Counts(ctx, storage.Received)
		require.NoError(t, err)
		return pc[storage.StatusSucceeded] == committed && rc[storage.StatusSucceeded] == 2*committed
	}, "all rows Succeeded")
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, g := range []string{"billing.v1", "shipping.v1"} {
		for n := 1; n <= total; n++ {
			want := 1
			if n%10 == 0 {
				want = 0
			}
			require.Equal(t, want, h.counts[g][n], "group %s, order %d", g, n)
		}
	}
	var orders int
	require.NoError(t, pool.QueryRowContext(ctx, `SELECT COUNT(*) FROM [`+schema+`].[orders]`).Scan(&orders))
	require.Equal(t, committed, orders)
	t.Logf("%d messages published by %d goroutines in %s; all handled by 2 groups after %s",
		total, writers, published.Round(time.Millisecond), all.Round(time.Millisecond))
}

// plainPublish publishes in a transaction committed with tx.Commit, which
// the bus does not see.
func plainPublish(ctx context.Context, db *sql.DB, bus *cap.Bus[*sql.Tx], insert string, n int, rollback bool) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, insert, n); err != nil {
		return err
	}
	if err := bus.PublishTx(ctx, tx, "order.created", order{N: n}); err != nil {
		return err
	}
	if rollback {
		return tx.Rollback()
	}
	return tx.Commit()
}

func eventually(t *testing.T, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", d, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sendLog records which instance forwarded each message to the broker.
type sendLog struct {
	mu   sync.Mutex
	by   map[string][]string // msg id → instances that forwarded it
	seen map[string][]string // instance → ids it was asked to send
}

// gatedTransport forwards to a shared broker, recording sends; while its
// gate is set it holds sends until the gate returns.
type gatedTransport struct {
	transport.Transport
	name string
	log  *sendLog
	mu   sync.Mutex
	gate func(ctx context.Context) error
}

func (g *gatedTransport) setGate(f func(ctx context.Context) error) {
	g.mu.Lock()
	g.gate = f
	g.mu.Unlock()
}

func (g *gatedTransport) Send(ctx context.Context, m *message.Message) error {
	return g.SendBatch(ctx, []*message.Message{m})[0]
}

func (g *gatedTransport) SendBatch(ctx context.Context, msgs []*message.Message) []error {
	g.log.mu.Lock()
	for _, m := range msgs {
		g.log.seen[g.name] = append(g.log.seen[g.name], m.ID())
	}
	g.log.mu.Unlock()
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		if err := gate(ctx); err != nil {
			errs := make([]error, len(msgs))
			for i := range errs {
				errs[i] = err
			}
			return errs
		}
	}
	errs := g.Transport.SendBatch(ctx, msgs)
	g.log.mu.Lock()
	for i, m := range msgs {
		if errs == nil || errs[i] == nil {
			g.log.by[m.ID()] = append(g.log.by[m.ID()], g.name)
		}
	}
	g.log.mu.Unlock()
	return errs
}

// TestBusThreeInstances: three buses share one database and one broker. No
// row is sent twice while all are healthy; when one is stopped abruptly
// while holding claimed rows, the others send them after its lease.
func TestBusThreeInstances(t *testing.T) {
	const lease = 2 * time.Second
	ctx := context.Background()
	pool := openDB(t, 32)
	schema := newSchema(t)
	broker := memtr.New()
	t.Cleanup(func() { _ = broker.Close() })
	log := &sendLog{by: map[string][]string{}, seen: map[string][]string{}}
	h := newHandled()
	names := []string{"A", "B", "C"}
	var (
		buses   []*cap.Bus[*sql.Tx]
		gates   []*gatedTransport
		cancels []context.CancelFunc
	)
	for i, name := range names {
		store, err := sqlserver.New(pool, sqlserver.Options{Schema: schema})
		require.NoError(t, err)
		gt := &gatedTransport{Transport: broker, name: name, log: log}
		wid := int64(100 + i)
		bus, err := cap.New(store, gt, cap.Options{
			Logger: quietLogger(), WorkerID: &wid, Lease: lease, PollInterval: 200 * time.Millisecond,
			BatchSize: 10, Senders: 1,
		})
		require.NoError(t, err)
		require.NoError(t, cap.Subscribe(bus, "multi", "g", func(ctx context.Context, m cap.Msg[order]) error {
			h.add(m.Group, m.Payload.N)
			return nil
		}))
		runCtx, cancel := context.WithCancel(ctx)
		require.NoError(t, bus.Start(runCtx))
		t.Cleanup(func() {
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			_ = bus.Shutdown(sctx)
			cancel()
		})
		buses, gates, cancels = append(buses, bus), append(gates, gt), append(cancels, cancel)
	}
	// perTx messages per transaction, committed with tx.Commit.
	publish := func(from, to, perTx int) {
		for n := from; n <= to; n += perTx {
			tx, err := pool.BeginTx(ctx, nil)
			require.NoError(t, err)
			for i := n; i < n+perTx && i <= to; i++ {
				require.NoError(t, buses[n%3].PublishTx(ctx, tx, "multi", order{N: i}))
			}
			require.NoError(t, tx.Commit())
		}
	}

	// Healthy: every row is forwarded once, by some instance.
	publish(1, 600, 1)
	eventually(t, 30*time.Second, func() bool { return h.distinct("g.v1") == 600 }, "600 messages handled")
	log.mu.Lock()
	require.Len(t, log.by, 600)
	per := map[string]int{}
	for id, by := range log.by {
		require.Len(t, by, 1, "message %s forwarded by %v", id, by)
		per[by[0]]++
	}
	log.mu.Unlock()
	t.Logf("healthy: 600 messages forwarded once each, by instance: %v", per)

	// A and B hold their sends; C never completes its.
	release := make(chan struct{})
	hold := func(ctx context.Context) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	gates[0].setGate(hold)
	gates[1].setGate(hold)
	gates[2].setGate(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	log.mu.Lock()
	clear(log.seen)
	log.mu.Unlock()
	publish(601, 900, 30)
	eventually(t, 10*time.Second, func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		return len(log.seen["C"]) > 0
	}, "C is sending a batch")
	log.mu.Lock()
	held := append([]string(nil), log.seen["C"]...)
	log.mu.Unlock()
	cancels[2]() // C stops abruptly, mid-batch
	stopped := time.Now()
	// Its rows stay leased to it.
	for _, id := range held {
		r := getByMessageID(t, buses[0].Storage(), id)
		require.Equal(t, storage.StatusScheduled, r.Status)
		require.NotNil(t, r.NextAttemptAt)
		require.True(t, r.NextAttemptAt.After(time.Now().UTC().Add(-time.Second)), "row %s still leased", id)
	}
	close(release)
	eventually(t, 30*time.Second, func() bool { return h.distinct("g.v1") == 900 }, "900 messages handled")
	log.mu.Lock()
	defer log.mu.Unlock()
	for n := 601; n <= 900; n++ {
		_, ok := h.at(n)
		require.True(t, ok, "order %d handled", n)
	}
	for _, id := range held {
		by := log.by[id]
		require.Len(t, by, 1, "message %s forwarded by %v", id, by)
		require.NotEqual(t, "C", by[0])
	}
	for id, by := range log.by {
		require.Len(t, by, 1, "message %s forwarded by %v", id, by)
	}
	// Handlers run at least once. While every instance is healthy (orders
	// 1-600) they run exactly once; after C's abrupt stop, a handler C was
	// running when it stopped may run again on A or B, which is reported.
	h.mu.Lock()
	again := 0
	for n := 1; n <= 900; n++ {
		require.GreaterOrEqual(t, h.counts["g.v1"][n], 1, "order %d handled", n)
		if n <= 600 {
			require.Equal(t, 1, h.counts["g.v1"][n], "order %d handled more than once while all were healthy", n)
		}
		if h.counts["g.v1"][n] > 1 {
			again++
		}
	}
	h.mu.Unlock()
	var lastHeld time.Time
	for _, id := range held {
		n := orderOf(t, buses[0].Storage(), id)
		if at, _ := h.at(n); at.After(lastHeld) {
			lastHeld = at
		}
	}
	require.GreaterOrEqual(t, lastHeld.Sub(stopped), lease/2, "C's rows waited for its lease")
	t.Logf("C held %d rows when stopped; A and B sent them %s later (lease %s); %d handlers ran twice",
		len(held), lastHeld.Sub(stopped).Round(time.Millisecond), lease, again)
}

// getByMessageID finds the Published row of a message id (the row id).
func getByMessageID[TTx any](t *testing.T, s storage.Storage[TTx], id string) *storage.Record {
	t.Helper()
	var rowID int64
	_, err := fmt.Sscan(id, &rowID)
	require.NoError(t, err)
	r, err := s.Get(context.Background(), storage.Published, rowID)
	require.NoError(t, err)
	return r
}

// orderOf returns the order number a published message carries.
func orderOf[TTx any](t *testing.T, s storage.Storage[TTx], id string) int {
	t.Helper()
	m, err := message.DecodeContent(getByMessageID(t, s, id).Content)
	require.NoError(t, err)
	var o order
	require.NoError(t, message.JSON{}.Unmarshal(m.Body, &o))
	return o.N
}

// TestBusInboxExactlyOnce: a message delivered three times is handled by a
// transactional handler (SubscribeTx) once: its write and the Received
// row's Succeeded commit together, and a first attempt that fails after
// writing rolls its write back.
func TestBusInboxExactlyOnce(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, 16)
	schema := newSchema(t)
	store, err := sqlserver.New(db, sqlserver.Options{Schema: schema})
	require.NoError(t, err)
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	bus, err := cap.New(store, tr, busOptions(cap.Options{PollInterval: 50 * time.Millisecond}))
	require.NoError(t, err)
	execSQL(t, `CREATE TABLE [`+schema+`].[ledger] (msg nvarchar(100) NOT NULL, amount int NOT NULL)`)
	insert := `INSERT INTO [` + schema + `].[ledger] (msg, amount) VALUES (@p1, @p2)`
	var calls atomic.Int32
	require.NoError(t, cap.SubscribeTx(bus, "pay", "ledger", func(ctx context.Context, tx *sql.Tx, m cap.Msg[int]) error {
		if _, err := tx.ExecContext(ctx, insert, m.ID, m.Payload); err != nil {
			return err
		}
		if calls.Add(1) == 1 {
			return errors.New("fails after writing") // must roll the write back
		}
		return nil
	}))
	startBus(t, bus)
	msg := &message.Message{Headers: message.Headers{message.HeaderMessageID: "42", message.HeaderMessageName: "pay"}, Body: []byte(`5`)}
	for range 3 {
		require.NoError(t, tr.Send(ctx, msg))
	}
	eventually(t, 30*time.Second, func() bool {
		rs, _, err := store.List(ctx, storage.Received, storage.ListQuery{Group: "ledger.v1"})
		require.NoError(t, err)
		return len(rs) == 1 && rs[0].Status == storage.StatusSucceeded
	}, "one Succeeded Received row")
	var n, sum int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM [`+schema+`].[ledger]`).Scan(&n, &sum))
	require.Equal(t, 1, n, "one write committed")
	require.Equal(t, 5, sum)
	require.GreaterOrEqual(t, calls.Load(), int32(2), "the failed attempt was retried")
}
