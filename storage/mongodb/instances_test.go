package mongodb_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/internal/testwait"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/storagetest"
	memtr "github.com/go-cap/cap/transport/memory"
)

// runs counts handler runs per order number and keeps the time of the
// first.
type runs struct {
	mu    sync.Mutex
	n     map[int]int
	first map[int]time.Time
}

func (r *runs) add(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[n]++
	if _, ok := r.first[n]; !ok {
		r.first[n] = time.Now()
	}
}

// all reports whether orders from..to all ran.
func (r *runs) all(from, to int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n := from; n <= to; n++ {
		if r.n[n] == 0 {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds or d has passed.
func waitFor(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	testwait.Until(t, d, cond, "%s", what)
}

// TestBusTwoInstances: two buses on one database and one broker. Delayed
// messages (claimed by both instances' pollers when due, not handed over
// by the publisher) are each forwarded once while both are healthy; when
// one stops abruptly with claimed documents it has not sent, the other
// sends them once their lease has run out, and nothing is lost or sent
// twice.
func TestBusTwoInstances(t *testing.T) {
	const (
		lease   = 2 * time.Second
		delay   = 300 * time.Millisecond
		healthy = 300
		later   = 200
	)
	ctx := context.Background()
	c := connect(t)
	first := newStore(t, c)
	broker := memtr.New()
	t.Cleanup(func() { _ = broker.Close() })
	log := storagetest.NewSendLog()
	h := &runs{n: map[int]int{}, first: map[int]time.Time{}}
	names := []string{"A", "B"}
	var (
		buses   []*cap.Bus[*mongo.Session]
		trs     []*storagetest.GatedTransport
		cancels []context.CancelFunc
	)
	for i, name := range names {
		store := first
		if i > 0 {
			var err error
			store, err = newStoreOn(t, c, first.Database().Name())
			require.NoError(t, err)
		}
		tr := &storagetest.GatedTransport{Transport: broker, Name: name, Log: log}
		wid := int64(10 + i)
		bus, err := cap.New(store, tr, cap.Options{
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), WorkerID: &wid,
			Lease: lease, PollInterval: 200 * time.Millisecond, BatchSize: 10, Senders: 1,
		})
		require.NoError(t, err)
		require.NoError(t, cap.Subscribe(bus, "two", "g", func(ctx context.Context, m cap.Msg[order]) error {
			h.add(m.Payload.N)
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
		buses, trs, cancels = append(buses, bus), append(trs, tr), append(cancels, cancel)
	}
	// Batches of ten delayed messages, from both buses in turn.
	publish := func(from, to int) {
		for n := from; n <= to; n += 10 {
			var msgs []cap.Outgoing
			for i := n; i < n+10 && i <= to; i++ {
				msgs = append(msgs, cap.Outgoing{Topic: "two", Payload: order{N: i}, Options: []cap.PublishOption{cap.WithDelay(delay)}})
			}
			require.NoError(t, buses[(n/10)%2].PublishBatch(ctx, msgs...))
		}
	}

	// Healthy: every document is forwarded once, by one instance or the
	// other.
	publish(1, healthy)
	waitFor(t, 60*time.Second, func() bool { return h.all(1, healthy) }, fmt.Sprintf("%d messages handled", healthy))
	forwarded := log.Forwarded()
	require.Len(t, forwarded, healthy)
	per := map[string]int{}
	for id, by := range forwarded {
		require.Len(t, by, 1, "message %s forwarded by %v", id, by)
		per[by[0]]++
	}
	log.ResetAsked()
	require.Positive(t, per["A"], "A forwarded none: the instances did not share the documents")
	require.Positive(t, per["B"], "B forwarded none: the instances did not share the documents")
	t.Logf("healthy: %d messages forwarded once each, by instance: %v", healthy, per)

	// A holds its sends until released; B never completes one.
	release := make(chan struct{})
	trs[0].SetGate(func(ctx context.Context) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	trs[1].SetGate(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	publish(healthy+1, healthy+later)
	waitFor(t, 30*time.Second, func() bool {
		return len(log.Asked("B")) > 0
	}, "B is sending a batch")
	held := log.Asked("B")
	cancels[1]() // B stops abruptly, in the middle of a send
	stopped := time.Now()
	// Its documents stay leased to it.
	for _, id := range held {
		r := getByMessageID(t, first, id)
		require.NotEqual(t, storage.StatusSucceeded, r.Status, "message %s", id)
		require.NotNil(t, r.NextAttemptAt, "message %s", id)
		require.True(t, r.NextAttemptAt.After(time.Now().UTC().Add(-time.Second)), "message %s still leased", id)
	}
	close(release)
	waitFor(t, 60*time.Second, func() bool { return h.all(1, healthy+later) }, fmt.Sprintf("%d messages handled", healthy+later))

	forwarded = log.Forwarded()
	for _, id := range held {
		require.Equal(t, []string{"A"}, forwarded[id], "message %s B held", id)
	}
	require.Len(t, forwarded, healthy+later)
	for id, by := range forwarded {
		require.Len(t, by, 1, "message %s forwarded by %v", id, by)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	again := 0
	for n := 1; n <= healthy+later; n++ {
		if n <= healthy {
			require.Equal(t, 1, h.n[n], "order %d handled more than once while both were healthy", n)
		}
		if h.n[n] > 1 {
			again++
		}
	}
	var lastHeld time.Time
	for _, id := range held {
		if at := h.first[orderOf(t, first, id)]; at.After(lastHeld) {
			lastHeld = at
		}
	}
	require.GreaterOrEqual(t, lastHeld.Sub(stopped), lease/2, "B's documents waited for its lease")
	t.Logf("B held %d documents when stopped; A sent them %s later (lease %s); %d handlers ran twice",
		len(held), lastHeld.Sub(stopped).Round(time.Millisecond), lease, again)
}

// getByMessageID returns the published document of a message id (its _id).
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
