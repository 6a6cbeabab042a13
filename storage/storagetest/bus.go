package storagetest

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
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage"
	memtr "github.com/go-cap/cap/transport/memory"
)

// BusHarness describes a storage to RunBus: how to open storages on tables
// of a test's own, and the business statements the tests run in the
// storage's transactions (a table of orders, a ledger).
type BusHarness[TTx any] struct {
	// New returns a migrated storage on empty tables private to the test
	// (as Harness.New) and a function that returns another storage on the
	// same tables, as another instance of a service has.
	New func(t *testing.T) (storage.Storage[TTx], func(t *testing.T) storage.Storage[TTx])
	// Begin begins a business transaction on the storages' database;
	// Commit and Rollback end it without the bus, as a service that commits
	// its own transactions does.
	Begin    func(ctx context.Context) (TTx, error)
	Commit   func(ctx context.Context, tx TTx) error
	Rollback func(ctx context.Context, tx TTx) error
	// Orders creates a business table of the test's own and returns the
	// statement that inserts order n in a transaction and the count of the
	// committed orders.
	Orders func(t *testing.T) (insert func(ctx context.Context, tx TTx, n int) error, count func(ctx context.Context) (int, error))
	// Ledger creates a table of the test's own with no unique key and
	// returns the statement that inserts a row (msg, amount) in a
	// transaction and the number of committed rows and their sum.
	Ledger func(t *testing.T) (add func(ctx context.Context, tx TTx, msg string, amount int) error, sum func(ctx context.Context) (rows, total int, err error))
	// PollInterval is the buses' Options.PollInterval (0: 100 ms). A
	// storage that tells the bus of plain commits (a storage.Notifier) may
	// take a longer one.
	PollInterval time.Duration
	// NoTransactions, when not empty, says why the buses run without
	// business transactions: Begin, Commit, Rollback, Orders and Ledger
	// may then be nil, the messages are published with Publish and
	// PublishBatch, and InboxExactlyOnce and PlainCommitIsPrompt, which
	// need transactions, are skipped with this reason.
	NoTransactions string
	// Messages is the number of messages ExactlyOncePerGroup publishes
	// (0: 5,000), for a storage too slow for that many in a test.
	Messages int
	// Lease is the buses' lease in ExactlyOncePerGroup and ThreeInstances
	// (0: 900 ms and 2 s, short so that renewals and takeovers run many
	// times), for a storage whose claims, renewals and outcome updates
	// take longer than a fraction of that.
	Lease time.Duration
	// Timeout bounds each wait of the subtests for messages to be handled
	// and rows to settle (0: 30 s, 60 s for the handling of
	// ExactlyOncePerGroup's messages).
	Timeout time.Duration
}

// lease returns the harness's Lease, or d when it has none.
func (h BusHarness[TTx]) lease(d time.Duration) time.Duration {
	if h.Lease > 0 {
		return h.Lease
	}
	return d
}

// wait returns the harness's Timeout, or d when it has none.
func (h BusHarness[TTx]) wait(d time.Duration) time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return d
}

// RunBus runs whole buses (the in-memory broker) on the storage, as a
// service does: many writers in business transactions, a transactional
// handler, and three instances on one database. A storage without
// transactions (BusHarness.NoTransactions) runs the subtests that need
// none. A storage that is a storage.Notifier is also checked to tell the
// bus of plain commits. Subtests are named Bus/<name>, for go test -run; they run
// one after the other, as each loads the database with many connections.
func RunBus[TTx any](t *testing.T, h BusHarness[TTx]) {
	t.Helper()
	if h.New == nil {
		t.Fatal("storagetest: BusHarness.New is required")
	}
	if h.NoTransactions == "" && (h.Begin == nil || h.Commit == nil || h.Rollback == nil || h.Orders == nil || h.Ledger == nil) {
		t.Fatal("storagetest: Begin, Commit, Rollback, Orders and Ledger are required unless BusHarness.NoTransactions says why there are none")
	}
	if h.Messages <= 0 {
		h.Messages = 5000
	}
	if h.PollInterval <= 0 {
		h.PollInterval = 100 * time.Millisecond
	}
	// Whether the storage is a Notifier is read from the first storage a
	// subtest opens; only when -run selected none of them is one opened
	// for the question alone.
	var opened, notifier bool
	open := h.New
	h.New = func(t *testing.T) (storage.Storage[TTx], func(t *testing.T) storage.Storage[TTx]) {
		s, another := open(t)
		if !opened {
			_, notifier = s.(storage.Notifier)
			opened = true
		}
		return s, another
	}
	t.Run("Bus", func(t *testing.T) {
		t.Run("ExactlyOncePerGroup", func(t *testing.T) { testBusExactlyOnce(t, h) })
		t.Run("InboxExactlyOnce", func(t *testing.T) {
			if h.NoTransactions != "" {
				t.Skip("needs transactions: " + h.NoTransactions)
			}
			testBusInbox(t, h)
		})
		t.Run("ThreeInstances", func(t *testing.T) { testBusThreeInstances(t, h) })
		if !opened {
			_, _ = h.New(t)
		}
		if notifier {
			t.Run("PlainCommitIsPrompt", func(t *testing.T) {
				if h.NoTransactions != "" {
					t.Skip("needs transactions: " + h.NoTransactions)
				}
				testBusPlainCommitIsPrompt(t, h)
			})
		}
	})
}

type busOrder struct {
	N int `json:"n"`
}

func busOptions(o cap.Options) cap.Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.WorkerID == nil {
		wid := int64(7)
		o.WorkerID = &wid
	}
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

// waitUntil polls cond until it holds or d has passed.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testBusExactlyOnce: h.Messages messages published by 16 goroutines in
// business transactions, one in ten rolled back, half through InTx and half
// with a plain commit the bus does not see, are each handled exactly once
// by each of two groups; the rolled back ones never. Without transactions,
// they are published with Publish, one in ten not at all.
func testBusExactlyOnce[TTx any](t *testing.T, h BusHarness[TTx]) {
	const writers = 16
	total := h.Messages
	ctx := context.Background()
	store, _ := h.New(t)
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	// A short lease, so lease renewals run many times during the test: a
	// renewal must never make a finished row due again.
	bus, err := cap.New(store, tr, busOptions(cap.Options{PollInterval: h.PollInterval, Lease: h.lease(900 * time.Millisecond)}))
	require.NoError(t, err)
	counts := newHandled()
	for _, g := range []string{"billing", "shipping"} {
		require.NoError(t, cap.Subscribe(bus, "order.created", g, func(ctx context.Context, m cap.Msg[busOrder]) error {
			counts.add(m.Group, m.Payload.N)
			return nil
		}))
	}
	startBus(t, bus)
	var insertOrder func(ctx context.Context, tx TTx, n int) error
	var countOrders func(ctx context.Context) (int, error)
	if h.NoTransactions == "" {
		insertOrder, countOrders = h.Orders(t)
	}

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
				rollback := n%10 == 0
				var err error
				switch {
				case h.NoTransactions != "":
					// Without transactions, every tenth message is not
					// published at all.
					if !rollback {
						err = bus.Publish(ctx, "order.created", busOrder{N: n})
					}
				case w%2 == 0:
					// Through the bus: handed to the dispatcher on commit.
					err = bus.InTx(ctx, func(ctx context.Context, tx TTx) error {
						if err := insertOrder(ctx, tx, n); err != nil {
							return err
						}
						if err := bus.PublishTx(ctx, tx, "order.created", busOrder{N: n}); err != nil {
							return err
						}
						if rollback {
							return errRollback
						}
						return nil
					})
					if errors.Is(err, errRollback) {
						err = nil
					}
				default:
					err = plainPublish(ctx, h, func(ctx context.Context, tx TTx) error {
						if err := insertOrder(ctx, tx, n); err != nil {
							return err
						}
						return bus.PublishTx(ctx, tx, "order.created", busOrder{N: n})
					}, rollback)
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

	committed := total - total/10
	waitUntil(t, h.wait(60*time.Second), "every committed order handled by both groups", func() bool {
		return counts.distinct("billing.v1") == committed && counts.distinct("shipping.v1") == committed
	})
	all := time.Since(start)
	// Outcomes settle; then nothing is due and nothing ran twice.
	waitUntil(t, h.wait(30*time.Second), "all rows Succeeded", func() bool {
		pc, err := store.Counts(ctx, storage.Published)
		require.NoError(t, err)
		rc, err := store.Counts(ctx, storage.Received)
		require.NoError(t, err)
		return pc[storage.StatusSucceeded] == int64(committed) && rc[storage.StatusSucceeded] == int64(2*committed)
	})
	counts.mu.Lock()
	defer counts.mu.Unlock()
	for _, g := range []string{"billing.v1", "shipping.v1"} {
		for n := 1; n <= total; n++ {
			want := 1
			if n%10 == 0 {
				want = 0
			}
			require.Equal(t, want, counts.counts[g][n], "group %s, order %d", g, n)
		}
	}
	if countOrders != nil {
		orders, err := countOrders(ctx)
		require.NoError(t, err)
		require.Equal(t, committed, orders)
	}
	t.Logf("%d messages published by %d goroutines in %s; all handled by 2 groups after %s",
		committed, writers, published.Round(time.Millisecond), all.Round(time.Millisecond))
}

// plainPublish runs work in a transaction that it commits (or rolls back)
// itself, which the bus does not see.
func plainPublish[TTx any](ctx context.Context, h BusHarness[TTx], work func(context.Context, TTx) error, rollback bool) error {
	tx, err := h.Begin(ctx)
	if err != nil {
		return err
	}
	if err := work(ctx, tx); err != nil {
		_ = h.Rollback(ctx, tx)
		return err
	}
	if rollback {
		return h.Rollback(ctx, tx)
	}
	return h.Commit(ctx, tx)
}

// testBusInbox: a transactional handler (SubscribeTx) writes a ledger row
// in the transaction that marks its Received row Succeeded. Each of 200
// messages is delivered three times and its first attempt fails after
// writing; every message leaves exactly one ledger row.
func testBusInbox[TTx any](t *testing.T, h BusHarness[TTx]) {
	const total = 200
	ctx := context.Background()
	store, _ := h.New(t)
	add, sum := h.Ledger(t)
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	bus, err := cap.New(store, tr, busOptions(cap.Options{PollInterval: h.PollInterval,
		RetryPolicy: retry.CAP{MaxRetries: 5, ImmediateAttempts: -1, Interval: 50 * time.Millisecond}}))
	require.NoError(t, err)
	var failed sync.Map
	var calls atomic.Int32
	require.NoError(t, cap.SubscribeTx(bus, "pay", "ledger", func(ctx context.Context, tx TTx, m cap.Msg[int]) error {
		if err := add(ctx, tx, m.ID, m.Payload); err != nil {
			return err
		}
		calls.Add(1)
		if _, loaded := failed.LoadOrStore(m.ID, true); !loaded {
			return errors.New("fails after writing") // rolls the write back
		}
		return nil
	}))
	startBus(t, bus)
	for i := range total {
		msg := &message.Message{Headers: message.Headers{
			message.HeaderMessageID: fmt.Sprintf("inbox-%d", i), message.HeaderMessageName: "pay"}, Body: []byte(`5`)}
		for range 3 {
			require.NoError(t, tr.Send(ctx, msg))
		}
	}
	waitUntil(t, 30*time.Second, "every message Succeeded once", func() bool {
		c, err := store.Counts(ctx, storage.Received)
		require.NoError(t, err)
		return c[storage.StatusSucceeded] == total
	})
	recs, n, err := store.List(ctx, storage.Received, storage.ListQuery{Limit: 10 * total})
	require.NoError(t, err)
	require.EqualValues(t, total, n, "one Received row per message id")
	for _, r := range recs {
		require.Equal(t, storage.StatusSucceeded, r.Status)
	}
	rows, amount, err := sum(ctx)
	require.NoError(t, err)
	require.Equal(t, total, rows, "each message's write committed once")
	require.Equal(t, 5*total, amount)
	require.GreaterOrEqual(t, calls.Load(), int32(2*total), "every first attempt was retried")
}

// testBusPlainCommitIsPrompt: with a 10 s poll, messages committed
// without the bus are each handled within 2 s: the storage's notifications
// wake the bus. (A start-up claim may find one of them; not four.)
func testBusPlainCommitIsPrompt[TTx any](t *testing.T, h BusHarness[TTx]) {
	ctx := context.Background()
	store, _ := h.New(t)
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	bus, err := cap.New(store, tr, busOptions(cap.Options{PollInterval: 10 * time.Second}))
	require.NoError(t, err)
	got := make(chan int, 8)
	require.NoError(t, cap.Subscribe(bus, "prompt", "g", func(ctx context.Context, m cap.Msg[busOrder]) error {
		got <- m.Payload.N
		return nil
	}))
	startBus(t, bus)
	for n := 1; n <= 4; n++ {
		require.NoError(t, plainPublish(ctx, h, func(ctx context.Context, tx TTx) error {
			return bus.PublishTx(ctx, tx, "prompt", busOrder{N: n})
		}, false))
		committed := time.Now()
		select {
		case m := <-got:
			require.Equal(t, n, m)
			t.Logf("message %d handled %s after the commit", n, time.Since(committed).Round(time.Millisecond))
		case <-time.After(2 * time.Second):
			t.Fatalf("message %d not handled within 2 s of its commit, with a poll of 10 s", n)
		}
	}
}

// testBusThreeInstances: three buses share one database and one broker.
// No row is sent twice while all are healthy; when one is stopped abruptly
// while holding claimed rows, the others send them after its lease.
func testBusThreeInstances[TTx any](t *testing.T, h BusHarness[TTx]) {
	lease := h.lease(2 * time.Second)
	ctx := context.Background()
	first, another := h.New(t)
	broker := memtr.New()
	t.Cleanup(func() { _ = broker.Close() })
	log := NewSendLog()
	counts := newHandled()
	var (
		buses   []*cap.Bus[TTx]
		gates   []*GatedTransport
		cancels []context.CancelFunc
	)
	for i, name := range []string{"A", "B", "C"} {
		store := first
		if i > 0 {
			store = another(t)
		}
		gt := &GatedTransport{Transport: broker, Name: name, Log: log}
		wid := int64(100 + i)
		bus, err := cap.New(store, gt, busOptions(cap.Options{
			WorkerID: &wid, Lease: lease, PollInterval: 200 * time.Millisecond, BatchSize: 10, Senders: 1,
		}))
		require.NoError(t, err)
		require.NoError(t, cap.Subscribe(bus, "multi", "g", func(ctx context.Context, m cap.Msg[busOrder]) error {
			counts.add(m.Group, m.Payload.N)
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
	// perTx messages per transaction, committed without the bus: claimed
	// by whichever instance finds them. Without transactions, batches of
	// delayed messages, which the instances' pollers claim when due (the
	// publisher does not hand them to its dispatcher).
	publish := func(from, to, perTx int) {
		for n := from; n <= to; n += perTx {
			if h.NoTransactions != "" {
				var msgs []cap.Outgoing
				for i := n; i < n+perTx && i <= to; i++ {
					msgs = append(msgs, cap.Outgoing{Topic: "multi", Payload: busOrder{N: i},
						Options: []cap.PublishOption{cap.WithDelay(300 * time.Millisecond)}})
				}
				require.NoError(t, buses[n%3].PublishBatch(ctx, msgs...))
				continue
			}
			err := plainPublish(ctx, h, func(ctx context.Context, tx TTx) error {
				for i := n; i < n+perTx && i <= to; i++ {
					if err := buses[n%3].PublishTx(ctx, tx, "multi", busOrder{N: i}); err != nil {
						return err
					}
				}
				return nil
			}, false)
			require.NoError(t, err)
		}
	}
	healthyPerTx := 1
	if h.NoTransactions != "" {
		healthyPerTx = 10
	}

	// Healthy: every row is forwarded once, by some instance.
	publish(1, 600, healthyPerTx)
	waitUntil(t, h.wait(30*time.Second), "600 messages handled", func() bool { return counts.distinct("g.v1") == 600 })
	forwarded := log.Forwarded()
	require.Len(t, forwarded, 600)
	per := map[string]int{}
	for id, by := range forwarded {
		require.Len(t, by, 1, "message %s forwarded by %v", id, by)
		per[by[0]]++
	}
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
	gates[0].SetGate(hold)
	gates[1].SetGate(hold)
	gates[2].SetGate(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	log.ResetAsked()
	publish(601, 900, 30)
	waitUntil(t, h.wait(10*time.Second), "C sending a batch", func() bool {
		return len(log.Asked("C")) > 0
	})
	held := log.Asked("C")
	cancels[2]() // C stops abruptly, mid-batch
	stopped := time.Now()
	// Its rows stay leased to it.
	for _, id := range held {
		r := busRow(t, first, id)
		if h.NoTransactions == "" {
			require.Equal(t, storage.StatusScheduled, r.Status)
		} else {
			// A delayed message may still be Delayed while leased.
			require.NotEqual(t, storage.StatusSucceeded, r.Status, "message %s", id)
		}
		require.NotNil(t, r.NextAttemptAt)
		require.True(t, r.NextAttemptAt.After(time.Now().UTC().Add(-time.Second)), "row %s still leased", id)
	}
	close(release)
	waitUntil(t, h.wait(30*time.Second), "900 messages handled", func() bool { return counts.distinct("g.v1") == 900 })
	forwarded = log.Forwarded()
	for _, id := range held {
		by := forwarded[id]
		require.Len(t, by, 1, "message %s forwarded by %v", id, by)
		require.NotEqual(t, "C", by[0])
	}
	for id, by := range forwarded {
		require.Len(t, by, 1, "message %s forwarded by %v", id, by)
	}
	// Handlers run at least once. While every instance is healthy (orders
	// 1-600) they run exactly once; after C's abrupt stop, a handler C was
	// running when it stopped may run again on A or B, which is reported.
	counts.mu.Lock()
	again := 0
	for n := 1; n <= 900; n++ {
		require.GreaterOrEqual(t, counts.counts["g.v1"][n], 1, "order %d handled", n)
		if n <= 600 {
			require.Equal(t, 1, counts.counts["g.v1"][n], "order %d handled more than once while all were healthy", n)
		}
		if counts.counts["g.v1"][n] > 1 {
			again++
		}
	}
	counts.mu.Unlock()
	var lastHeld time.Time
	for _, id := range held {
		n := busOrderOf(t, first, id)
		if at, _ := counts.at(n); at.After(lastHeld) {
			lastHeld = at
		}
	}
	require.GreaterOrEqual(t, lastHeld.Sub(stopped), lease/2, "C's rows waited for its lease")
	t.Logf("C held %d rows when stopped; A and B sent them %s later (lease %s); %d handlers ran twice",
		len(held), lastHeld.Sub(stopped).Round(time.Millisecond), lease, again)
}

// busRow returns the Published row of a message id (the row id).
func busRow[TTx any](t *testing.T, s storage.Storage[TTx], id string) *storage.Record {
	t.Helper()
	var rowID int64
	_, err := fmt.Sscan(id, &rowID)
	require.NoError(t, err)
	r, err := s.Get(context.Background(), storage.Published, rowID)
	require.NoError(t, err)
	return r
}

// busOrderOf returns the order number a published message carries.
func busOrderOf[TTx any](t *testing.T, s storage.Storage[TTx], id string) int {
	t.Helper()
	m, err := message.DecodeContent(busRow(t, s, id).Content)
	require.NoError(t, err)
	var o busOrder
	require.NoError(t, message.JSON{}.Unmarshal(m.Body, &o))
	return o.N
}

// SQLTransactions returns BusHarness's Begin, Commit and Rollback for a
// storage of *sql.Tx on db.
func SQLTransactions(db *sql.DB) (begin func(context.Context) (*sql.Tx, error), commit, rollback func(context.Context, *sql.Tx) error) {
	return func(ctx context.Context) (*sql.Tx, error) { return db.BeginTx(ctx, nil) },
		func(_ context.Context, tx *sql.Tx) error { return tx.Commit() },
		func(_ context.Context, tx *sql.Tx) error { return tx.Rollback() }
}
