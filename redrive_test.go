package cap_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/memory"
	memtr "github.com/go-cap/cap/transport/memory"
	"github.com/stretchr/testify/require"
)

func TestRedriveAndStats(t *testing.T) {
	ctx := context.Background()
	store := memory.New()
	// A long poll interval: only the wake-up can make the re-drive quick.
	bus, err := cap.New(store, memtr.New(), cap.Options{Logger: quietLogger(), PollInterval: time.Hour})
	require.NoError(t, err)
	var fixed atomic.Bool
	var runs atomic.Int64
	require.NoError(t, cap.Subscribe(bus, "t", "g", func(ctx context.Context, m cap.Msg[string]) error {
		runs.Add(1)
		if !fixed.Load() {
			return cap.Permanent(errors.New("broken"))
		}
		return nil
	}))
	require.NoError(t, bus.Start(ctx))
	defer bus.Shutdown(ctx)
	require.NoError(t, bus.Publish(ctx, "t", "x"))
	var id int64
	require.Eventually(t, func() bool {
		recs, _, _ := store.List(ctx, storage.Received, storage.ListQuery{Status: storage.StatusFailed})
		if len(recs) == 1 {
			id = recs[0].ID
		}
		return len(recs) == 1
	}, 5*time.Second, 5*time.Millisecond)
	st := bus.Stats()
	require.EqualValues(t, 1, st.Published)
	require.EqualValues(t, 1, st.Consumed)
	require.EqualValues(t, 1, st.HandledFailed)
	require.EqualValues(t, 1, st.Processed)

	fixed.Store(true)
	missing, err := bus.Redrive(ctx, storage.Received, []int64{id, 12345})
	require.NoError(t, err)
	require.Equal(t, []int64{12345}, missing)
	require.Eventually(t, func() bool {
		r, err := store.Get(ctx, storage.Received, id)
		return err == nil && r.Status == storage.StatusSucceeded
	}, 5*time.Second, 5*time.Millisecond)
	require.EqualValues(t, 1, bus.Stats().HandledSucceeded)

	// A Succeeded Published row is sent again.
	pub, _, err := store.List(ctx, storage.Published, storage.ListQuery{})
	require.NoError(t, err)
	before := bus.Stats().Sent
	missing, err = bus.Redrive(ctx, storage.Published, []int64{pub[0].ID})
	require.NoError(t, err)
	require.Empty(t, missing)
	require.Eventually(t, func() bool { return bus.Stats().Sent == before+1 }, 5*time.Second, 5*time.Millisecond)
}
