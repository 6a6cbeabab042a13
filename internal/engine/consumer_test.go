package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage"
	memstore "github.com/go-cap/cap/storage/memory"
	"github.com/go-cap/cap/transport"
	memtr "github.com/go-cap/cap/transport/memory"
)

// flakyStore refuses batch inserts when failBatch is set, and the single
// insert of the row whose MessageID is failOnce the first time.
type flakyStore struct {
	*memstore.Storage
	failBatch atomic.Bool
	failOnce  string
	failed    atomic.Bool
}

func (s *flakyStore) InsertReceivedBatch(ctx context.Context, recs []*storage.Record) ([]bool, error) {
	if s.failBatch.Load() {
		return nil, errors.New("batch refused")
	}
	return s.Storage.InsertReceivedBatch(ctx, recs)
}

func (s *flakyStore) InsertReceived(ctx context.Context, rec *storage.Record) (bool, error) {
	if rec.MessageID == s.failOnce && !s.failed.Swap(true) {
		return false, errors.New("row refused")
	}
	return s.Storage.InsertReceived(ctx, rec)
}

// wrappedTransport is the in-memory broker with its deliveries wrapped.
type wrappedTransport struct {
	*memtr.Transport
	wrap func(transport.Delivery) transport.Delivery
}

func (w *wrappedTransport) Subscribe(ctx context.Context, group string, topics []string) (transport.Consumer, error) {
	cons, err := w.Transport.Subscribe(ctx, group, topics)
	if err != nil {
		return nil, err
	}
	return wrappedConsumer{Consumer: cons, wrap: w.wrap}, nil
}

type wrappedConsumer struct {
	transport.Consumer
	wrap func(transport.Delivery) transport.Delivery
}

func (c wrappedConsumer) Receive(ctx context.Context) (transport.Delivery, error) {
	d, err := c.Consumer.Receive(ctx)
	if err != nil {
		return nil, err
	}
	return c.wrap(d), nil
}

// checkedTransport fails the test when a delivery is acked before its
// Received row is stored.
type checkedTransport struct {
	store storage.Storage[*memstore.Tx]
	t     *testing.T
}

type checkedDelivery struct {
	transport.Delivery
	tr *checkedTransport
}

func (d checkedDelivery) Ack(ctx context.Context) error {
	id := d.Message().ID()
	recs, _, err := d.tr.store.List(ctx, storage.Received, storage.ListQuery{Content: `"` + id + `"`, Limit: 100})
	if err == nil {
		found := false
		for _, r := range recs {
			found = found || r.MessageID == id
		}
		if !found {
			d.tr.t.Errorf("message %s acked before its Received row was stored", id)
		}
	}
	return d.Delivery.Ack(ctx)
}

// TestConsumerStoresBeforeAck: with StoreFirst, deliveries are acked only
// once their rows are stored; when a batch insert fails the rows are stored one by one, and
// a row the storage refuses is returned to the broker and stored when it
// comes again. Every message is handled once.
func TestConsumerStoresBeforeAck(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store := &flakyStore{Storage: memstore.New(), failOnce: "m-2"}
	store.failBatch.Store(true)
	checked := &checkedTransport{store: store, t: t}
	tr := &wrappedTransport{Transport: memtr.New(), wrap: func(d transport.Delivery) transport.Delivery {
		return checkedDelivery{Delivery: d, tr: checked}
	}}
	defer tr.Close()
	ids, err := message.NewIDGenerator(1)
	require.NoError(t, err)
	cfg := &Config[*memstore.Tx]{
		Store: store, Transport: tr, Version: "v1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		PollInterval: 50 * time.Millisecond, Lease: 30 * time.Second, BatchSize: 10, Senders: 1, Workers: 2,
		Consumers: 1, SendRetry: retry.CAP{}, HandlerRetry: retry.CAP{}, SucceedExpiry: time.Hour,
		FailedExpiry: time.Hour, NewID: ids.Next, StoreFirst: true,
	}
	var (
		mu      sync.Mutex
		handled = map[string]int{}
	)
	var reg Registry[*memstore.Tx]
	reg.Add(&Subscriber[*memstore.Tx]{Topic: "t", Group: "g", Invoke: func(_ context.Context, _ *memstore.Tx, m *message.Message, _ int) (*Reply, error) {
		mu.Lock()
		handled[m.ID()]++
		mu.Unlock()
		return nil, nil
	}})
	disp := NewDispatcher(cfg)
	exec := NewExecutor(cfg, &reg, disp)
	cons := NewConsumers(cfg, &reg, exec)
	exec.Run(ctx)
	disp.Run(ctx, nil)
	require.NoError(t, cons.Start(ctx))

	msgs := testMessages("m-", 5)
	require.Nil(t, tr.SendBatch(ctx, msgs))
	waitHandled(t, &mu, handled, len(msgs))
	require.True(t, store.failed.Load(), "the refused row was tried")

	// Batches again, with a redelivered duplicate among new messages.
	store.failBatch.Store(false)
	more := []*message.Message{msgs[0].Clone(), {Headers: message.Headers{
		message.HeaderMessageID: "m-new", message.HeaderMessageName: "t"}, Body: []byte(`{}`)}}
	require.Nil(t, tr.SendBatch(ctx, more))
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handled["m-new"] == 1
	}, 10*time.Second, 10*time.Millisecond, "new message handled")

	cons.Stop()
	require.NoError(t, exec.Stop(ctx))
	require.NoError(t, disp.Stop(ctx))
	mu.Lock()
	defer mu.Unlock()
	for id, n := range handled {
		require.Equal(t, 1, n, "handler runs of %s", id)
	}
	_, total, err := store.List(ctx, storage.Received, storage.ListQuery{})
	require.NoError(t, err)
	require.EqualValues(t, len(msgs)+1, total, "Received rows")
}

// slowAckDelivery holds its Ack until release is closed.
type slowAckDelivery struct {
	transport.Delivery
	release chan struct{}
}

func (d slowAckDelivery) Ack(ctx context.Context) error {
	select {
	case <-d.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return d.Delivery.Ack(ctx)
}

// watchedStore calls onClaim with the rows of each Claim of Received
// rows, before the Claim returns.
type watchedStore struct {
	*memstore.Storage
	onClaim func(recs []*storage.Record)
}

func (s *watchedStore) Claim(ctx context.Context, t storage.Table, req storage.ClaimRequest) ([]*storage.Record, error) {
	recs, err := s.Storage.Claim(ctx, t, req)
	if t == storage.Received && err == nil {
		s.onClaim(recs)
	}
	return recs, err
}

// TestSlowAcksKeepLeases: with StoreFirst, a broker whose acks take longer
// than the lease does not make a message run twice: the rows being acked
// keep their leases, so another instance claiming due rows all along does
// not take them, and each message is handled once.
func TestSlowAcksKeepLeases(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Long enough for the lease keeper (every third of it) to keep up on
	// a busy machine.
	const lease = time.Second
	mem := memstore.New()
	release := make(chan struct{})
	tr := &wrappedTransport{Transport: memtr.New(), wrap: func(d transport.Delivery) transport.Delivery {
		return slowAckDelivery{Delivery: d, release: release}
	}}
	defer tr.Close()
	ids, err := message.NewIDGenerator(1)
	require.NoError(t, err)
	var (
		mu      sync.Mutex
		handled = map[string]int{}
	)
	newReg := func() *Registry[*memstore.Tx] {
		var reg Registry[*memstore.Tx]
		reg.Add(&Subscriber[*memstore.Tx]{Topic: "t", Group: "g", Invoke: func(_ context.Context, _ *memstore.Tx, m *message.Message, _ int) (*Reply, error) {
			mu.Lock()
			handled[m.ID()]++
			mu.Unlock()
			return nil, nil
		}})
		return &reg
	}
	newCfg := func(store storage.Storage[*memstore.Tx]) *Config[*memstore.Tx] {
		return &Config[*memstore.Tx]{
			Store: store, Transport: tr, Version: "v1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			PollInterval: 20 * time.Millisecond, Lease: lease, BatchSize: 10, Senders: 1, Workers: 2,
			Consumers: 1, SendRetry: retry.CAP{}, HandlerRetry: retry.CAP{}, SucceedExpiry: time.Hour,
			FailedExpiry: time.Hour, NewID: ids.Next, StoreFirst: true,
		}
	}

	// Instance A receives and acks slowly.
	cfgA := newCfg(mem)
	regA := newReg()
	dispA := NewDispatcher(cfgA)
	execA := NewExecutor(cfgA, regA, dispA)
	consA := NewConsumers(cfgA, regA, execA)
	execA.Run(ctx)
	dispA.Run(ctx, nil)
	require.NoError(t, consA.Start(ctx))

	// Instance B only claims due Received rows (it has no consumer). Once
	// a message is stored, it claims again and again; after it has tried
	// for two leases, the acks go through. It does not wait for all three
	// rows: the consumer may have received the first message alone, and it
	// stores the next ones only once that one's ack is through.
	var stored atomic.Int64 // unix nanos of the first claim after a row was stored
	var tries atomic.Int32
	var taken atomic.Int64 // rows B claimed while the acks were held
	watched := &watchedStore{Storage: mem, onClaim: func(recs []*storage.Record) {
		select {
		case <-release:
			return // the acks go through: B's later claims are not the test's
		default:
		}
		taken.Add(int64(len(recs)))
		_, total, err := mem.List(context.Background(), storage.Received, storage.ListQuery{})
		if err != nil || total == 0 {
			return
		}
		now := time.Now().UnixNano()
		stored.CompareAndSwap(0, now)
		if time.Duration(now-stored.Load()) > 2*lease && tries.Add(1) == 3 {
			close(release)
		}
	}}
	cfgB := newCfg(watched)
	regB := newReg()
	dispB := NewDispatcher(cfgB)
	execB := NewExecutor(cfgB, regB, dispB)
	execB.Run(ctx)
	dispB.Run(ctx, nil)

	msgs := testMessages("s-", 3)
	require.Nil(t, tr.SendBatch(ctx, msgs))
	waitHandled(t, &mu, handled, len(msgs))
	consA.Stop()
	for _, stop := range []func(context.Context) error{execA.Stop, dispA.Stop, execB.Stop, dispB.Stop} {
		require.NoError(t, stop(ctx))
	}
	require.GreaterOrEqual(t, tries.Load(), int32(3), "instance B claimed again and again while the acks were held")
	require.Zero(t, taken.Load(), "instance B took rows whose acks were held")
	mu.Lock()
	defer mu.Unlock()
	for id, n := range handled {
		require.Equal(t, 1, n, "handler runs of %s", id)
	}
}

// testMessages returns n messages on topic "t" with ids prefix0, prefix1...
func testMessages(prefix string, n int) []*message.Message {
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = &message.Message{Headers: message.Headers{
			message.HeaderMessageID: prefix + strconv.Itoa(i), message.HeaderMessageName: "t"}, Body: []byte(`{}`)}
	}
	return msgs
}

// waitHandled waits until handled, guarded by mu, holds n messages.
func waitHandled(t *testing.T, mu *sync.Mutex, handled map[string]int, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == n
	}, 20*time.Second, 10*time.Millisecond, "every message handled")
}
