package sqlserver_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/sqlserver"
	memtr "github.com/go-cap/cap/transport/memory"
)

// passLog records the collector's passes (its deletes on the Published
// table) by instance, and whether two instances ever delete at once.
type passLog struct {
	mu      sync.Mutex
	active  map[string]int
	overlap []string
	passes  []string
	changed chan string // the instance of a pass by another than the last
}

func (p *passLog) enter(name string, t storage.Table) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for other, n := range p.active {
		if other != name && n > 0 {
			p.overlap = append(p.overlap, name+" while "+other)
		}
	}
	p.active[name]++
	if t != storage.Published {
		return
	}
	if len(p.passes) == 0 || p.passes[len(p.passes)-1] != name {
		select {
		case p.changed <- name:
		default:
		}
	}
	p.passes = append(p.passes, name)
}

func (p *passLog) leave(name string) {
	p.mu.Lock()
	p.active[name]--
	p.mu.Unlock()
}

// byInstance is a storage whose deletes are recorded; everything else,
// the Leaser included, is the SQL Server storage's.
type byInstance struct {
	*sqlserver.Store
	name string
	log  *passLog
}

func (s *byInstance) DeleteExpired(ctx context.Context, t storage.Table, limit int) (int64, error) {
	s.log.enter(s.name, t)
	defer s.log.leave(s.name)
	// Long enough that passes of two instances running at once would meet.
	// Time, not an event: a barrier (both passes in before either goes
	// on) would wait out its timeout on every correct pass, one instance
	// collecting at a time, and so be this same sleep under another name.
	time.Sleep(5 * time.Millisecond)
	return s.Store.DeleteExpired(ctx, t, limit)
}

// TestCollectorOneAtATime runs three instances on one database: one
// collects, the others do not; when it is killed (no release) another takes
// over once its lease has run out, and when that one shuts down the third
// takes over at its next try. The lease is a row of CAP's Lock table. Needs
// CAP_TEST_SQLSERVER.
func TestCollectorOneAtATime(t *testing.T) {
	const lease = 600 * time.Millisecond
	db := openDB(t, 12)
	schema := newSchema(t)
	broker := memtr.New()
	t.Cleanup(func() { _ = broker.Close() })
	log := &passLog{active: map[string]int{}, changed: make(chan string, 1)}

	type instance struct {
		bus    *cap.Bus[*sql.Tx]
		cancel context.CancelFunc
	}
	insts := map[string]*instance{}
	for i, name := range []string{"A", "B", "C"} {
		store, err := sqlserver.New(db, sqlserver.Options{Schema: schema})
		require.NoError(t, err)
		wid := int64(200 + i)
		bus, err := cap.New(&byInstance{Store: store, name: name, log: log}, broker, cap.Options{
			Logger: quietLogger(), WorkerID: &wid, Lease: lease, CollectorCleaningInterval: 50 * time.Millisecond,
			InstanceID: "same-host",
		})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		require.NoError(t, bus.Start(ctx))
		insts[name] = &instance{bus: bus, cancel: cancel}
		t.Cleanup(func() {
			cancel()
			_ = bus.Shutdown(context.Background())
		})
	}
	awaitChange := func(within time.Duration, what string) (string, time.Duration) {
		t.Helper()
		start := time.Now()
		select {
		case name := <-log.changed:
			return name, time.Since(start)
		case <-time.After(within):
			t.Fatalf("%s: no other instance collected within %v (passes %v)", what, within, log.passes)
			return "", 0
		}
	}
	passesOf := func() []string {
		log.mu.Lock()
		defer log.mu.Unlock()
		return append([]string(nil), log.passes...)
	}
	awaitPasses := func(n int) {
		t.Helper()
		eventually(t, 10*time.Second, func() bool { return len(passesOf()) >= n }, "collector passes")
	}

	first, _ := awaitChange(10*time.Second, "start")
	awaitPasses(10) // about a second of passes, every lease/3
	for _, p := range passesOf() {
		require.Equal(t, first, p, "only the lease holder collects")
	}

	// Killed: its lease runs out, and another instance takes over.
	n := len(passesOf())
	insts[first].cancel()
	second, after := awaitChange(lease+lease/3+2*time.Second, "after the holder was killed")
	require.NotEqual(t, first, second)
	require.GreaterOrEqual(t, after, lease/2, "the lease of a killed holder is taken over only when it runs out")
	t.Logf("%s killed; %s collected %v later", first, second, after.Round(time.Millisecond))
	awaitPasses(len(passesOf()) + 5)
	for _, p := range passesOf()[n:] {
		if p != first { // the killed one may have been inside a pass
			require.Equal(t, second, p, "only the new lease holder collects")
		}
	}

	// Shut down gracefully: it releases the lease, and the third instance
	// takes it at its next try, well before the lease would run out.
	n = len(passesOf())
	require.NoError(t, insts[second].bus.Shutdown(context.Background()))
	third, after := awaitChange(lease+2*time.Second, "after the holder shut down")
	require.NotContains(t, []string{first, second}, third)
	t.Logf("%s shut down; %s collected %v later", second, third, after.Round(time.Millisecond))
	awaitPasses(len(passesOf()) + 3)
	for _, p := range passesOf()[n+1:] {
		require.Equal(t, third, p)
	}

	log.mu.Lock()
	defer log.mu.Unlock()
	require.Empty(t, log.overlap, "two instances collected at the same time")
}
