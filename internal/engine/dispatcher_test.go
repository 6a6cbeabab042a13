package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
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

// dispatcherConfig is a dispatcher's configuration with one sender, an hour's
// lease and no poll, so that only hand-overs and wakes move rows.
func dispatcherConfig(store *memstore.Storage, tr transport.Transport, ids *message.IDGenerator, batch int) *Config[*memstore.Tx] {
	return &Config[*memstore.Tx]{
		Store: store, Transport: tr, Version: "v1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		PollInterval: time.Hour, Lease: time.Hour, BatchSize: batch, Senders: 1, Workers: 1,
		Consumers: 1, SendRetry: retry.CAP{}, HandlerRetry: retry.CAP{}, SucceedExpiry: time.Hour,
		FailedExpiry: time.Hour, NewID: ids.Next,
	}
}

// storeLeased stores message i on topic "t" as a publisher does before a
// hand-over: leased to this instance.
func storeLeased(ctx context.Context, t *testing.T, store *memstore.Storage, ids *message.IDGenerator, i int,
	lease time.Duration) (*storage.Record, *message.Message) {
	t.Helper()
	return storeLeasedBody(ctx, t, store, ids, i, lease, []byte(`{}`))
}

// storeLeasedBody is storeLeased with a body of the caller's.
func storeLeasedBody(ctx context.Context, t *testing.T, store *memstore.Storage, ids *message.IDGenerator, i int,
	lease time.Duration, body []byte) (*storage.Record, *message.Message) {
	t.Helper()
	m := &message.Message{Headers: message.Headers{
		message.HeaderMessageID: strconv.Itoa(i), message.HeaderMessageName: "t"}, Body: body}
	content, err := message.EncodeContent(m)
	require.NoError(t, err)
	rec := &storage.Record{ID: ids.Next(), Version: "v1", Name: "t", Content: content,
		Status: storage.StatusScheduled, DueIn: lease}
	require.NoError(t, store.InsertPublished(ctx, []*storage.Record{rec}))
	return rec, m
}

// gatedTransport holds every send until open is closed.
type gatedTransport struct {
	*memtr.Transport
	open chan struct{}
}

func (g *gatedTransport) SendBatch(ctx context.Context, msgs []*message.Message) []error {
	<-g.open
	return g.Transport.SendBatch(ctx, msgs)
}

// TestHandoverOverflowReleasesRows: hand-overs that find the senders behind
// do not wait for them, and their rows, stored with an hour's lease, are
// released so that the claimer sends them long before the lease ends.
func TestHandoverOverflowReleasesRows(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store := memstore.New()
	tr := &gatedTransport{Transport: memtr.New(), open: make(chan struct{})}
	defer tr.Close()
	cons, err := tr.Subscribe(ctx, "g", []string{"t"})
	require.NoError(t, err)
	ids, err := message.NewIDGenerator(1)
	require.NoError(t, err)
	cfg := dispatcherConfig(store, tr, ids, 1)
	disp := NewDispatcher(cfg)
	disp.Run(ctx, nil)

	const n = 100
	overflowed := 0
	for i := range n {
		rec, m := storeLeased(ctx, t, store, ids, i, cfg.Lease)
		if !disp.Handover(ctx, []*storage.Record{rec}, []*message.Message{m}) {
			overflowed++
		}
	}
	require.Positive(t, overflowed, "hand-overs beyond the queue's room")
	close(tr.open)
	disp.Wake()

	got := map[string]bool{}
	for len(got) < n {
		d, err := cons.Receive(ctx)
		require.NoError(t, err, "received %d of %d", len(got), n)
		got[d.Message().ID()] = true
		require.NoError(t, d.Ack(ctx))
	}
	require.NoError(t, disp.Stop(ctx))
	require.Eventually(t, func() bool {
		counts, err := store.Counts(ctx, storage.Published)
		return err == nil && counts[storage.StatusSucceeded] == n
	}, 10*time.Second, 10*time.Millisecond, "every row Succeeded")
}

var _ transport.Transport = (*gatedTransport)(nil)

// heldConfirms is a Pipeliner whose messages reach the broker at once and
// whose confirms wait until open is closed.
type heldConfirms struct {
	*memtr.Transport
	open      chan struct{}
	published chan string // ids, as they are published
}

func (h *heldConfirms) PublishBatch(ctx context.Context, msgs []*message.Message) func() []error {
	errs := h.Transport.SendBatch(ctx, msgs)
	for _, m := range msgs {
		h.published <- m.ID()
	}
	return func() []error {
		<-h.open
		return errs
	}
}

// pipelined is a running dispatcher with one sender, batches of 10 and a
// transport that holds every confirm until tr.open is closed.
type pipelined struct {
	store *memstore.Storage
	tr    *heldConfirms
	ids   *message.IDGenerator
	cfg   *Config[*memstore.Tx]
	disp  *Dispatcher[*memstore.Tx]
}

func newPipelined(ctx context.Context, t *testing.T) *pipelined {
	t.Helper()
	p := &pipelined{store: memstore.New(),
		tr: &heldConfirms{Transport: memtr.New(), open: make(chan struct{}), published: make(chan string, 100)}}
	t.Cleanup(func() { _ = p.tr.Close() })
	var err error
	p.ids, err = message.NewIDGenerator(1)
	require.NoError(t, err)
	p.cfg = dispatcherConfig(p.store, p.tr, p.ids, 10)
	p.disp = NewDispatcher(p.cfg)
	p.disp.Run(ctx, nil)
	return p
}

// handover stores message i with body and hands it to the dispatcher.
func (p *pipelined) handover(ctx context.Context, t *testing.T, i int, body []byte) {
	t.Helper()
	rec, m := storeLeasedBody(ctx, t, p.store, p.ids, i, p.cfg.Lease, body)
	require.True(t, p.disp.Handover(ctx, []*storage.Record{rec}, []*message.Message{m}))
}

// published returns the id of the next message published.
func (p *pipelined) published(ctx context.Context, t *testing.T) string {
	t.Helper()
	select {
	case id := <-p.tr.published:
		return id
	case <-ctx.Done():
		t.Fatal("nothing published")
		return ""
	}
}

// nothingPublished fails when a message is published within 100 ms.
func (p *pipelined) nothingPublished(t *testing.T, why string) {
	t.Helper()
	select {
	case id := <-p.tr.published:
		t.Fatalf("%s published with %s", id, why)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestSendWindowBoundsBytes: large messages are bounded by their bytes, not
// their number, while they wait for confirms; a message larger than the
// bound is still sent, alone.
func TestSendWindowBoundsBytes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := newPipelined(ctx, t)
	jsonString := func(n int) []byte { return []byte(`"` + strings.Repeat("x", n-2) + `"`) }

	third := pipelineBytes/3 + 1
	p.handover(ctx, t, 0, jsonString(third))
	p.handover(ctx, t, 1, jsonString(third))
	require.Equal(t, "0", p.published(ctx, t))
	require.Equal(t, "1", p.published(ctx, t))
	p.handover(ctx, t, 2, jsonString(third)) // three do not fit
	p.nothingPublished(t, fmt.Sprintf("%d bytes unconfirmed", 2*third))
	close(p.tr.open)
	require.Equal(t, "2", p.published(ctx, t))

	p.handover(ctx, t, 3, jsonString(pipelineBytes+1))
	require.Equal(t, "3", p.published(ctx, t))
	require.NoError(t, p.disp.Stop(ctx))
	counts, err := p.store.Counts(ctx, storage.Published)
	require.NoError(t, err)
	require.EqualValues(t, 4, counts[storage.StatusSucceeded])
}

// TestSendsDoNotWaitForEarlierConfirms: with a Pipeliner, a message handed
// over while the broker has not confirmed earlier ones is published at
// once, however small the batches; what waits for confirms is bounded, and
// a row is Succeeded only after its confirm.
func TestSendsDoNotWaitForEarlierConfirms(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := newPipelined(ctx, t)
	body := []byte(`{}`)

	// One at a time: each is published while every earlier one waits for
	// its confirm.
	limit := pipelineDepth * p.cfg.BatchSize
	for i := range limit {
		p.handover(ctx, t, i, body)
		require.Equal(t, strconv.Itoa(i), p.published(ctx, t))
	}
	// The window is full: the next one waits for a confirm.
	p.handover(ctx, t, limit, body)
	p.nothingPublished(t, fmt.Sprintf("%d messages unconfirmed", limit))
	counts, err := p.store.Counts(ctx, storage.Published)
	require.NoError(t, err)
	require.Zero(t, counts[storage.StatusSucceeded], "Succeeded before its confirm")

	close(p.tr.open)
	require.Equal(t, strconv.Itoa(limit), p.published(ctx, t))
	require.NoError(t, p.disp.Stop(ctx))
	counts, err = p.store.Counts(ctx, storage.Published)
	require.NoError(t, err)
	require.EqualValues(t, limit+1, counts[storage.StatusSucceeded])
}
