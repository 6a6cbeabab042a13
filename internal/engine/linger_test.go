package engine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
	memstore "github.com/go-cap/cap/storage/memory"
	"github.com/go-cap/cap/transport"
)

// batchRecorder records the size of every InsertReceivedBatch.
type batchRecorder struct {
	*memstore.Storage
	mu    sync.Mutex
	sizes []int
}

func (s *batchRecorder) InsertReceivedBatch(ctx context.Context, recs []*storage.Record) ([]bool, error) {
	s.mu.Lock()
	s.sizes = append(s.sizes, len(recs))
	s.mu.Unlock()
	return s.Storage.InsertReceivedBatch(ctx, recs)
}

func (s *batchRecorder) batches() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.sizes...)
}

type nopDelivery struct{ m *message.Message }

func (d nopDelivery) Message() *message.Message    { return d.m }
func (d nopDelivery) Topic() string                { return d.m.Name() }
func (d nopDelivery) Ack(context.Context) error    { return nil }
func (d nopDelivery) Reject(context.Context) error { return nil }

// TestStoreLingersUnderSteadyFlow: a lone delivery is stored at once; once
// a batch held more than one, the store waits (up to ReceiveLinger) for the
// batch to fill, so a steady flow makes fewer, larger commits.
func TestStoreLingersUnderSteadyFlow(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store := &batchRecorder{Storage: memstore.New()}
	cfg := &Config[*memstore.Tx]{Store: store, BatchSize: 3, ReceiveLinger: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "v1"}
	c := &Consumers[*memstore.Tx]{cfg: cfg, conns: []transport.Consumer{}}
	n := 0
	next := func() *arrival[*memstore.Tx] {
		n++
		id := "m-" + strconv.Itoa(n)
		m := &message.Message{Headers: message.Headers{message.HeaderMessageID: id, message.HeaderMessageName: "t"}}
		return &arrival[*memstore.Tx]{d: nopDelivery{m}, msg: m, cause: errors.New("no subscriber"),
			rec: &storage.Record{ID: int64(n), Version: "v1", Name: "t", Group: "g", MessageID: id,
				Content: []byte(`{"Headers":{},"Value":null}`), Status: storage.StatusFailed, Terminal: true}}
	}

	in := make(chan *arrival[*memstore.Tx], 3)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.storeLoop(ctx, "g", in)
	}()
	// Not steady: a lone delivery does not wait the minute.
	in <- next()
	require.Eventually(t, func() bool { return len(store.batches()) == 1 }, 10*time.Second, time.Millisecond)

	// Two waiting at once make a batch of two: the flow is steady.
	close(in)
	<-done
	in = make(chan *arrival[*memstore.Tx], 3)
	done = make(chan struct{})
	in <- next()
	in <- next()
	go func() {
		defer close(done)
		c.storeLoop(ctx, "g", in)
	}()
	require.Eventually(t, func() bool { return len(store.batches()) == 2 }, 10*time.Second, time.Millisecond)
	// Now one delivery waits for the others, until the batch is full: the
	// others come only once the loop has taken the first.
	in <- next()
	require.Eventually(t, func() bool { return len(in) == 0 }, 10*time.Second, 100*time.Microsecond)
	in <- next()
	in <- next()
	require.Eventually(t, func() bool { return len(store.batches()) == 3 }, 10*time.Second, time.Millisecond)
	close(in)
	<-done
	require.Equal(t, []int{1, 2, 3}, store.batches())
}
