package mongodb_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/internal/testwait"
	"github.com/go-cap/cap/storage"
	memtr "github.com/go-cap/cap/transport/memory"
)

type order struct {
	N int `json:"n"`
}

// TestBusOncePerGroup: 2,000 messages published without a transaction
// from 8 goroutines are each handled exactly once by each of two groups.
func TestBusOncePerGroup(t *testing.T) {
	const writers = 8
	total := 2000
	ctx := context.Background()
	c := connect(t)
	store := newStore(t, c)
	tr := memtr.New()
	t.Cleanup(func() { _ = tr.Close() })
	wid := int64(3)
	bus, err := cap.New(store, tr, cap.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), WorkerID: &wid,
		PollInterval: 500 * time.Millisecond,
	})
	require.NoError(t, err)
	var mu sync.Mutex
	counts := map[string]map[int]int{}
	for _, g := range []string{"billing", "shipping"} {
		require.NoError(t, cap.Subscribe(bus, "order.created", g, func(ctx context.Context, m cap.Msg[order]) error {
			mu.Lock()
			defer mu.Unlock()
			if counts[m.Group] == nil {
				counts[m.Group] = map[int]int{}
			}
			counts[m.Group][m.Payload.N]++
			return nil
		}))
	}
	require.NoError(t, bus.Start(ctx))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = bus.Shutdown(sctx)
	})
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for {
				n := int(next.Add(1))
				if n > total {
					return
				}
				if err := bus.Publish(ctx, "order.created", order{N: n}); err != nil {
					t.Errorf("publish %d: %v", n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	published := time.Since(start)
	testwait.UntilNil(t, 90*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(counts["billing.v1"]) == total && len(counts["shipping.v1"]) == total {
			return nil
		}
		return fmt.Errorf("not every message handled by both groups: billing %d, shipping %d", len(counts["billing.v1"]), len(counts["shipping.v1"]))
	})
	handled := time.Since(start)
	// Let the outcomes settle; then every row Succeeded once. (Counts
	// reads every document on FerretDB: poll it gently.) Each outcome
	// update decodes every document there too, so on a machine busy with
	// other packages' tests the last outcomes may come a minute or more
	// after the last handling: the settling has a deadline of its own.
	// (testwait's pauses grow to 250 ms within the first seconds.)
	testwait.UntilNil(t, 2*time.Minute, func() error {
		pc, err := store.Counts(ctx, storage.Published)
		require.NoError(t, err)
		rc, err := store.Counts(ctx, storage.Received)
		require.NoError(t, err)
		if pc[storage.StatusSucceeded] == int64(total) && rc[storage.StatusSucceeded] == int64(2*total) {
			return nil
		}
		return fmt.Errorf("rows not all Succeeded: published %v, received %v", pc, rc)
	})
	t.Logf("%d messages published in %s, handled by both groups in %s, all rows Succeeded in %s",
		total, published.Round(time.Millisecond), handled.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	mu.Lock()
	defer mu.Unlock()
	for g, m := range counts {
		for n, k := range m {
			if k != 1 {
				t.Errorf("%s handled order %d %d times", g, n, k)
			}
		}
	}
}
