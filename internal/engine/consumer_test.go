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

// checkedTransport fails the test when a delivery is acked before its
// Received row is stored.
type checkedTransport struct {
	*memtr.Transport
	store storage.Storage[*memstore.Tx]
	t     *testing.T
}

func (c *checkedTransport) Subscribe(ctx context.Context, group string, topics []string) (transport.Consumer, error) {
	cons, err := c.Transport.Subscribe(ctx, group, topics)
	if err != nil {
		return nil, err
	}
	return checkedConsumer{Consumer: cons, tr: c}, nil
}

type checkedConsumer struct {
	transport.Consumer
	tr *checkedTransport
}

func (c checkedConsumer) Receive(ctx context.Context) (transport.Delivery, error) {
	d, err := c.Consumer.Receive(ctx)
	if err != nil {
		return nil, err
	}
	return checkedDelivery{Delivery: d, tr: c.tr}, nil
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

// TestConsumerStoresBeforeAck: deliveries are acked only once their rows
// are stored; when a batch insert fails the rows are stored one by one, and
// a row the storage refuses is returned to the broker and stored when it
// comes again. Every message is handled once.
func TestConsumerStoresBeforeAck(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store := &flakyStore{Storage: memstore.New(), failOnce: "m-2"}
	store.failBatch.Store(true)
	tr := &checkedTransport{Transport: memtr.New(), store: store, t: t}
	defer tr.Close()
	ids, err := message.NewIDGenerator(1)
	require.NoError(t, err)
	cfg := &Config[*memstore.Tx]{
		Store: store, Transport: tr, Version: "v1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		PollInterval: 50 * time.Millisecond, Lease: 30 * time.Second, BatchSize: 10, Senders: 1, Workers: 2,
		Consumers: 1, SendRetry: retry.CAP{}, HandlerRetry: retry.CAP{}, SucceedExpiry: time.Hour,
		FailedExpiry: time.Hour, NewID: ids.Next,
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

	msgs := make([]*message.Message, 5)
	for i := range msgs {
		msgs[i] = &message.Message{Headers: message.Headers{
			message.HeaderMessageID: "m-" + strconv.Itoa(i), message.HeaderMessageName: "t"}, Body: []byte(`{}`)}
	}
	require.Nil(t, tr.SendBatch(ctx, msgs))
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == len(msgs)
	}, 10*time.Second, 10*time.Millisecond, "every message handled")
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
