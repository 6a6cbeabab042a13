package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
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

// countingStore counts the writes of Received rows, and refuses (with
// storage.ErrRefused) the Succeeded rows of the message refuse.
type countingStore struct {
	*memstore.Storage
	outcomes atomic.Int32 // SetOutcomes calls on Received
	inserts  atomic.Int32 // rows passed to InsertReceivedBatch
	refuse   string
}

func (s *countingStore) SetOutcomes(ctx context.Context, t storage.Table, outs []storage.Outcome) error {
	if t == storage.Received {
		s.outcomes.Add(1)
	}
	return s.Storage.SetOutcomes(ctx, t, outs)
}

func (s *countingStore) refused(recs ...*storage.Record) bool {
	for _, r := range recs {
		if r.MessageID == s.refuse && r.Status == storage.StatusSucceeded {
			return true
		}
	}
	return false
}

func (s *countingStore) InsertReceivedBatch(ctx context.Context, recs []*storage.Record) ([]bool, error) {
	if s.refused(recs...) {
		return nil, storage.ErrRefused
	}
	s.inserts.Add(int32(len(recs)))
	return s.Storage.InsertReceivedBatch(ctx, recs)
}

func (s *countingStore) InsertReceived(ctx context.Context, rec *storage.Record) (bool, error) {
	if s.refused(rec) {
		return false, storage.ErrRefused
	}
	return s.Storage.InsertReceived(ctx, rec)
}

// ackedDelivery records its acks, and whether its row existed then.
type ackedDelivery struct {
	transport.Delivery
	rig *directRig
}

func (d ackedDelivery) Ack(ctx context.Context) error {
	err := d.Delivery.Ack(ctx)
	d.rig.mu.Lock()
	defer d.rig.mu.Unlock()
	if err != nil {
		d.rig.ackErrs = append(d.rig.ackErrs, err)
		return err
	}
	id := d.Message().ID()
	recs, _, lerr := d.rig.store.List(ctx, storage.Received, storage.ListQuery{Content: `"` + id + `"`, Limit: 10})
	if lerr != nil || len(recs) == 0 {
		d.rig.t.Errorf("message %s acked before its Received row was stored", id)
	}
	d.rig.acks[id]++
	d.rig.cond.Broadcast()
	return nil
}

// directRig is one instance's engine on the in-memory storage and broker,
// with a plain handler of topic "t" in group "g".
type directRig struct {
	t       *testing.T
	store   *countingStore
	tr      *wrappedTransport
	cfg     *Config[*memstore.Tx]
	disp    *Dispatcher[*memstore.Tx]
	exec    *Executor[*memstore.Tx]
	cons    *Consumers[*memstore.Tx]
	mu      sync.Mutex
	cond    *sync.Cond
	handled map[string]int
	acks    map[string]int
	ackErrs []error
}

func newDirectRig(t *testing.T, ctx context.Context, lease time.Duration, policy retry.Policy,
	handler func(ctx context.Context, m *message.Message, retries int) error) *directRig {
	t.Helper()
	ids, err := message.NewIDGenerator(1)
	require.NoError(t, err)
	r := &directRig{t: t, store: &countingStore{Storage: memstore.New()}, handled: map[string]int{},
		acks: map[string]int{}}
	r.cond = sync.NewCond(&r.mu)
	r.tr = &wrappedTransport{Transport: memtr.New(), wrap: func(d transport.Delivery) transport.Delivery {
		return ackedDelivery{Delivery: d, rig: r}
	}}
	t.Cleanup(func() { _ = r.tr.Close() })
	r.cfg = &Config[*memstore.Tx]{
		Store: r.store, Transport: r.tr, Version: "v1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		PollInterval: 20 * time.Millisecond, Lease: lease, BatchSize: 10, Senders: 1, Workers: 4,
		Consumers: 1, SendRetry: retry.CAP{}, HandlerRetry: policy, SucceedExpiry: time.Hour,
		FailedExpiry: time.Hour, NewID: ids.Next,
	}
	var reg Registry[*memstore.Tx]
	reg.Add(&Subscriber[*memstore.Tx]{Topic: "t", Group: "g", Invoke: func(ctx context.Context, _ *memstore.Tx, m *message.Message, retries int) (*Reply, error) {
		r.mu.Lock()
		r.handled[m.ID()]++
		r.cond.Broadcast()
		r.mu.Unlock()
		return nil, handler(ctx, m, retries)
	}})
	r.disp = NewDispatcher(r.cfg)
	r.exec = NewExecutor(r.cfg, &reg, r.disp)
	r.cons = NewConsumers(r.cfg, &reg, r.exec)
	r.exec.Run(ctx)
	r.disp.Run(ctx, nil)
	require.NoError(t, r.cons.Start(ctx))
	return r
}

// stop shuts the engine down as the bus does.
func (r *directRig) stop(ctx context.Context) {
	r.cons.Pause()
	require.NoError(r.t, r.exec.Stop(ctx))
	r.cons.Close()
	require.NoError(r.t, r.disp.Stop(ctx))
}

// waitFor waits, with r.mu held while it checks, until cond holds.
func (r *directRig) waitFor(ctx context.Context, what string, cond func() bool) {
	r.t.Helper()
	stop := context.AfterFunc(ctx, func() {
		r.mu.Lock()
		r.cond.Broadcast()
		r.mu.Unlock()
	})
	defer stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for !cond() {
		if ctx.Err() != nil {
			r.t.Fatalf("timed out waiting until %s", what)
		}
		r.cond.Wait()
	}
}

// row returns the Received row of message id.
func (r *directRig) row(ctx context.Context, id string) *storage.Record {
	r.t.Helper()
	recs, _, err := r.store.List(ctx, storage.Received, storage.ListQuery{Content: `"` + id + `"`, Limit: 10})
	require.NoError(r.t, err)
	require.Len(r.t, recs, 1, "rows of %s", id)
	return recs[0]
}

// TestDirectRowWrittenOnce: a plain handler runs before its delivery's row
// is written; the row is written once, Succeeded, and the delivery acked
// after it. A message delivered again once stored is dropped unhandled.
func TestDirectRowWrittenOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newDirectRig(t, ctx, 30*time.Second, retry.CAP{}, func(context.Context, *message.Message, int) error { return nil })
	msgs := testMessages("d-", 20)
	require.Nil(t, r.tr.SendBatch(ctx, msgs))
	r.waitFor(ctx, "every message acked", func() bool { return len(r.acks) == len(msgs) })
	for _, m := range msgs {
		row := r.row(ctx, m.ID())
		require.Equal(t, storage.StatusSucceeded, row.Status)
		require.Nil(t, row.NextAttemptAt, "a handled row is not due")
		require.NotNil(t, row.ExpiresAt, "a Succeeded row expires")
	}
	require.Zero(t, r.store.outcomes.Load(), "no outcome update of a Received row")
	require.EqualValues(t, len(msgs), r.store.inserts.Load(), "one row written per message")

	// The same message again: dropped before its handler, and acked.
	require.Nil(t, r.tr.SendBatch(ctx, []*message.Message{msgs[0].Clone()}))
	r.waitFor(ctx, "the duplicate acked", func() bool { return r.acks[msgs[0].ID()] == 2 })
	r.stop(ctx)
	for id, n := range r.handled {
		require.Equal(t, 1, n, "handler runs of %s", id)
	}
	require.Empty(t, r.ackErrs)
}

// onceThenOK is a retry policy: retry after 30 ms, three times.
type onceThenOK struct{}

func (onceThenOK) Next(retries int) (time.Duration, bool) { return 30 * time.Millisecond, retries < 3 }

// TestDirectFailureStoredForRetry: a handler that fails writes its row
// Failed and due again, and the retry claimer runs it to success.
func TestDirectFailureStoredForRetry(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newDirectRig(t, ctx, 30*time.Second, onceThenOK{}, func(_ context.Context, _ *message.Message, retries int) error {
		if retries == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	require.Nil(t, r.tr.SendBatch(ctx, testMessages("f-", 1)))
	r.waitFor(ctx, "the retry ran", func() bool { return r.handled["f-0"] == 2 })
	r.stop(ctx)
	row := r.row(ctx, "f-0")
	require.Equal(t, storage.StatusSucceeded, row.Status)
	require.Equal(t, 1, row.Retries)
	require.Equal(t, 1, r.acks["f-0"])
	require.Empty(t, r.ackErrs)
}

// TestDirectSlowHandlerStoredEarly: a handler still running after a
// fraction of the lease has its row stored (Scheduled, leased) and its
// delivery acked, so a broker's redelivery timeout never fires; its
// outcome then updates the row.
func TestDirectSlowHandlerStoredEarly(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	release := make(chan struct{})
	r := newDirectRig(t, ctx, 600*time.Millisecond, retry.CAP{}, func(ctx context.Context, _ *message.Message, _ int) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	require.Nil(t, r.tr.SendBatch(ctx, testMessages("w-", 1)))
	r.waitFor(ctx, "the running message acked", func() bool { return r.acks["w-0"] == 1 })
	row := r.row(ctx, "w-0")
	require.Equal(t, storage.StatusScheduled, row.Status)
	require.NotNil(t, row.NextAttemptAt, "leased")
	close(release)
	r.stop(ctx)
	row = r.row(ctx, "w-0")
	require.Equal(t, storage.StatusSucceeded, row.Status)
	require.Nil(t, row.NextAttemptAt)
	require.Equal(t, 1, r.handled["w-0"])
	require.EqualValues(t, 1, r.store.outcomes.Load(), "the outcome updated the row")
	require.Empty(t, r.ackErrs)
}

// TestDirectStopAcksBeforeClose: a graceful stop while a handler runs
// waits for it, writes its row and acks its delivery before the broker
// consumers close, so the message does not come again.
func TestDirectStopAcksBeforeClose(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	started := make(chan struct{})
	release := make(chan struct{})
	// A long lease: the row is not stored early during the test.
	r := newDirectRig(t, ctx, time.Hour, retry.CAP{}, func(context.Context, *message.Message, int) error {
		close(started)
		<-release
		return nil
	})
	require.Nil(t, r.tr.SendBatch(ctx, testMessages("p-", 1)))
	<-started
	paused := make(chan struct{})
	go func() {
		r.cons.Pause()
		close(paused)
	}()
	<-paused
	close(release)
	require.NoError(t, r.exec.Stop(ctx))
	require.Equal(t, 1, r.acks["p-0"], "acked before the consumers closed")
	r.cons.Close()
	require.NoError(t, r.disp.Stop(ctx))
	require.Equal(t, storage.StatusSucceeded, r.row(ctx, "p-0").Status)
	require.Empty(t, r.ackErrs)
}

// TestDirectRefusedRowStoredFailed: a handled message whose row the
// storage refuses is stored Failed with the storage's error and acked: it
// does not come back to be handled again and again.
func TestDirectRefusedRowStoredFailed(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newDirectRig(t, ctx, 30*time.Second, retry.CAP{}, func(context.Context, *message.Message, int) error { return nil })
	r.store.refuse = "r-1"
	require.Nil(t, r.tr.SendBatch(ctx, testMessages("r-", 3)))
	r.waitFor(ctx, "every message acked", func() bool { return len(r.acks) == 3 })
	r.stop(ctx)
	row := r.row(ctx, "r-1")
	require.Equal(t, storage.StatusFailed, row.Status)
	require.True(t, strings.Contains(string(row.Content), excStore), "the storage's refusal in cap-exception: %s", row.Content)
	for _, id := range []string{"r-0", "r-2"} {
		require.Equal(t, storage.StatusSucceeded, r.row(ctx, id).Status, id)
	}
	for id, n := range r.handled {
		require.Equal(t, 1, n, "handler runs of %s", id)
	}
}
