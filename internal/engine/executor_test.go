package engine

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage"
	memstore "github.com/go-cap/cap/storage/memory"
	memtr "github.com/go-cap/cap/transport/memory"
)

// lapsingStore lets the leases of Received rows lapse (its extensions do
// nothing, as on a storage too slow to keep up) and reports the outcomes
// of Received rows once written.
type lapsingStore struct {
	*watchedStore
	outcomes chan []storage.Outcome
}

func (s *lapsingStore) Reschedule(ctx context.Context, t storage.Table, ids []int64, in time.Duration) error {
	if t == storage.Received && in > 0 {
		return nil
	}
	return s.Storage.Reschedule(ctx, t, ids, in)
}

func (s *lapsingStore) SetOutcomes(ctx context.Context, t storage.Table, outs []storage.Outcome) error {
	err := s.Storage.SetOutcomes(ctx, t, outs)
	if t == storage.Received && err == nil {
		s.outcomes <- outs
	}
	return err
}

// TestRowFinishingDuringItsClaimRunsOnce: a row whose lease lapsed while
// its handler ran is claimed again, and its handler ends, and its outcome
// is written, before that claim returns. The claimer must not run it a
// second time: the handler runs once.
func TestRowFinishingDuringItsClaimRunsOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const lease = 200 * time.Millisecond
	ids, err := message.NewIDGenerator(1)
	require.NoError(t, err)
	var runs atomic.Int32
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	var reg Registry[*memstore.Tx]
	reg.Add(&Subscriber[*memstore.Tx]{Topic: "t", Group: "g", Invoke: func(context.Context, *memstore.Tx, *message.Message, int) (*Reply, error) {
		runs.Add(1)
		started <- struct{}{}
		<-release
		return nil, nil
	}})

	store := &lapsingStore{watchedStore: &watchedStore{Storage: memstore.New()},
		outcomes: make(chan []storage.Outcome, 10)}
	rec := &storage.Record{ID: ids.Next(), Version: "v1", Name: "t", Group: "g", MessageID: "m-1",
		Status: storage.StatusScheduled}
	rec.Content, err = message.EncodeContent(testMessages("m-", 1)[0])
	require.NoError(t, err)
	ok, err := store.InsertReceived(ctx, rec)
	require.NoError(t, err)
	require.True(t, ok)

	// The first claim takes the row and its handler starts. A later claim
	// that takes it again (its lease lapsed) lets the handler end and
	// returns once the outcome is written and the executor is done with
	// the row; the claim after that shows the rows of that one were dealt
	// with.
	var (
		mu      sync.Mutex
		claims  int
		raced   bool
		settled = make(chan struct{})
	)
	var exec *Executor[*memstore.Tx]
	store.onClaim = func(recs []*storage.Record) {
		mu.Lock()
		defer mu.Unlock()
		claims++
		switch {
		case raced:
			select {
			case <-settled:
			default:
				close(settled)
			}
		case len(recs) == 1 && claims > 1:
			raced = true
			close(release)
			outs := <-store.outcomes
			assert.Equal(t, storage.StatusSucceeded, outs[0].Status)
			assert.Eventually(t, func() bool {
				exec.mu.Lock()
				defer exec.mu.Unlock()
				_, running := exec.inflight[rec.ID]
				return !running
			}, 10*time.Second, time.Millisecond, "the executor done with the row")
		}
	}
	tr := memtr.New()
	defer tr.Close()
	cfg := &Config[*memstore.Tx]{
		Store: store, Transport: tr, Version: "v1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		PollInterval: 20 * time.Millisecond, Lease: lease, BatchSize: 10, Senders: 1, Workers: 2,
		Consumers: 1, SendRetry: retry.CAP{}, HandlerRetry: retry.CAP{}, SucceedExpiry: time.Hour,
		FailedExpiry: time.Hour, NewID: ids.Next,
	}
	disp := NewDispatcher(cfg)
	exec = NewExecutor(cfg, &reg, disp)
	exec.Run(ctx)
	<-started
	select {
	case <-settled:
	case <-ctx.Done():
		t.Fatal("no claim after the racing one")
	}
	require.NoError(t, exec.Stop(ctx))
	require.Equal(t, int32(1), runs.Load(), "handler runs")
	got, err := store.Get(ctx, storage.Received, rec.ID)
	require.NoError(t, err)
	require.Equal(t, storage.StatusSucceeded, got.Status)
}
