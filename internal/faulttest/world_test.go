//go:build faults

package faulttest_test

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/internal/faulttest"
	"github.com/go-cap/cap/internal/testwait"
)

// quietTimeout bounds the wait for every committed message to be handled
// and every row to be finished once the faults stop.
const quietTimeout = 2 * time.Minute

// world is one scenario's system: its schema, its queues and exchange, and
// its producer and consumer instances.
type world struct {
	t       *testing.T
	e       *env
	broker  brokerSide
	name    string
	storage string // "" (PostgreSQL), "mysql" or "mongodb"
	schema  string // PostgreSQL schema, or MySQL table prefix
	prefix  string

	producers []*proc
	consumers []*proc

	rngMu sync.Mutex
	rng   *rand.Rand

	mu     sync.Mutex
	events map[string]int // faults injected, by kind
}

func (e *env) newWorld(t *testing.T, name, storage string, broker brokerSide, instances int, rate float64, seed uint64) *world {
	t.Helper()
	w := &world{
		t:       t,
		e:       e,
		broker:  broker,
		name:    name,
		storage: storage,
		schema:  "faulttest_" + e.run + "_" + strings.ReplaceAll(name, "-", "_"),
		prefix:  "faulttest-" + e.run + "-" + name,
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		events:  map[string]int{},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn := e.dsn
	var extra []string
	queues := []string{w.prefix + "." + faulttest.GroupPlain + ".v1", w.prefix + "." + faulttest.GroupInbox + ".v1"}
	switch storage {
	case "mysql":
		dsn = e.mysqlDSN
		require.NoError(t, faulttest.CreateTablesMySQL(ctx, e.mariadb(t), w.schema))
	case "mongodb":
		// The business tables stay in PostgreSQL; no inbox group.
		dsn, extra = e.ferret(t).uri, []string{"-business", e.dsn}
		queues = queues[:1]
		require.NoError(t, faulttest.CreateTables(ctx, e.pool, w.schema))
	default:
		require.NoError(t, faulttest.CreateTables(ctx, e.pool, w.schema))
	}
	t.Cleanup(func() {
		// Programs first: they must not see their tables vanish.
		w.stopAll()
		if e.keep {
			t.Logf("kept schema %s, groups %v and prefix %s", w.schema, queues, w.prefix)
			return
		}
		if err := e.ensureUp(); err != nil {
			t.Errorf("services: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if storage == "mysql" {
			if err := w.dropMySQL(ctx); err != nil {
				t.Errorf("drop tables %s: %v", w.schema, err)
			}
		} else if _, err := e.pool.Exec(ctx, `DROP SCHEMA IF EXISTS "`+w.schema+`" CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", w.schema, err)
		}
		if storage == "mongodb" {
			if err := w.mongoDB().Drop(ctx); err != nil {
				t.Errorf("drop MongoDB database %s: %v", w.schema, err)
			}
		}
		if err := w.broker.cleanup(w.prefix, queues, w.prefix+"."+faulttest.Topic); err != nil {
			t.Errorf("clean up the broker: %v", err)
		}
	})
	for i := range instances {
		common := append([]string{"-storage", cmp.Or(storage, "postgres"), "-dsn", dsn, "-schema", w.schema, "-prefix", w.prefix,
			"-instance", "i" + strconv.Itoa(i)}, append(extra, broker.args()...)...)
		c, err := newProc(fmt.Sprintf("consumer-%d", i), filepath.Join(e.bin, "consumer"),
			filepath.Join(e.logDir, name+"-consumer-"+strconv.Itoa(i)+".log"),
			append(common, "-worker-id", strconv.Itoa(200+i)))
		require.NoError(t, err)
		p, err := newProc(fmt.Sprintf("producer-%d", i), filepath.Join(e.bin, "producer"),
			filepath.Join(e.logDir, name+"-producer-"+strconv.Itoa(i)+".log"),
			append(common, "-worker-id", strconv.Itoa(100+i), "-rate", strconv.FormatFloat(rate, 'f', -1, 64)))
		require.NoError(t, err)
		w.consumers = append(w.consumers, c)
		w.producers = append(w.producers, p)
	}
	return w
}

// start starts the consumers, so that the groups are bound before the
// first message is sent, then the producers.
func (w *world) start() {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, group := range [][]*proc{w.consumers, w.producers} {
		for _, p := range group {
			p.supervise()
		}
		for _, p := range group {
			require.NoError(w.t, p.waitReady(ctx))
		}
	}
}

func (w *world) stopAll() {
	for _, group := range [][]*proc{w.producers, w.consumers} {
		for _, p := range group {
			_ = p.stop(20 * time.Second)
		}
	}
}

// between returns a random duration in [lo, hi).
func (w *world) between(lo, hi time.Duration) time.Duration {
	w.rngMu.Lock()
	defer w.rngMu.Unlock()
	return lo + time.Duration(w.rng.Int64N(int64(hi-lo)))
}

func (w *world) pick(n int) int {
	w.rngMu.Lock()
	defer w.rngMu.Unlock()
	return w.rng.IntN(n)
}

func (w *world) event(kind string) {
	w.mu.Lock()
	w.events[kind]++
	w.mu.Unlock()
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// killEvery SIGKILLs a process chosen by pick every lo..hi until ctx ends;
// its supervisor starts it again.
func (w *world) killEvery(ctx context.Context, lo, hi time.Duration, kind string, pick func() []*proc) {
	for sleep(ctx, w.between(lo, hi)) {
		for _, p := range pick() {
			p.kill()
		}
		w.event(kind)
	}
}

func (w *world) restartBroker() {
	w.event("broker-restart")
	start := time.Now()
	if err := w.broker.restart(w.between(1500*time.Millisecond, 3*time.Second)); err != nil {
		w.t.Errorf("restart the broker: %v", err)
		return
	}
	w.t.Logf("broker restarted: %v without a broker", time.Since(start).Round(100*time.Millisecond))
}

func (w *world) restartPostgres() {
	w.event("postgres-restart")
	start := time.Now()
	if err := w.e.restartPostgres(w.between(1500*time.Millisecond, 3*time.Second)); err != nil {
		w.t.Errorf("restart PostgreSQL: %v", err)
		return
	}
	w.t.Logf("PostgreSQL restarted: %v without a database", time.Since(start).Round(100*time.Millisecond))
}

// finish stops the producers, waits for quiescence, stops the consumers and
// returns the final figures.
func (w *world) finish() (stats, time.Duration) {
	w.t.Helper()
	if err := w.e.ensureUp(); err != nil {
		w.t.Errorf("services: %v", err)
	}
	for _, p := range w.producers {
		if err := p.stop(20 * time.Second); err != nil {
			w.t.Log(err)
		}
	}
	start := time.Now()
	if err := testwait.Poll(quietTimeout, func() error {
		st, err := w.stats()
		if err == nil && !st.quiet() {
			err = fmt.Errorf("%+v", st)
		}
		return err
	}); err != nil {
		w.t.Errorf("no quiescence %v after the producers stopped: %v", quietTimeout, err)
	}
	quiet := time.Since(start)
	for _, c := range w.consumers {
		if err := c.stop(20 * time.Second); err != nil {
			w.t.Log(err)
		}
	}
	st, err := w.stats()
	require.NoError(w.t, err)
	return st, quiet
}

// stats are the figures of a scenario, read from its tables.
type stats struct {
	Committed         int64 // orders committed
	Handled           int64 // committed orders handled by both groups
	Lost              int64 // committed orders some group never handled
	RolledBackHandled int64 // handled orders that never committed
	Duplicates        int64 // extra handlings of the plain handler
	InboxDuplicates   int64 // extra effects of the inbox handler
	RolledBack        int64 // rollbacks the producers recorded
	RolledBackCommit  int64 // recorded rollbacks found committed (must be 0)
	PendingPublished  int64 // published rows not Succeeded, or still due
	PendingReceived   int64 // received rows not Succeeded, or still due
	// A run without transactions (mongodb): no inbox group, and the
	// handled orders whose producer was killed between Publish and the
	// order's row.
	noInbox     bool
	Unconfirmed int64
}

func (s stats) quiet() bool {
	return s.Lost == 0 && s.PendingPublished == 0 && s.PendingReceived == 0
}

func (s stats) line(scenario string) string {
	if s.noInbox {
		return fmt.Sprintf("FAULT scenario=%s committed=%d handled=%d lost=%d rolledback_handled=%d duplicates=%d inbox_duplicates=n/a unconfirmed=%d",
			scenario, s.Committed, s.Handled, s.Lost, s.RolledBackHandled, s.Duplicates, s.Unconfirmed)
	}
	return fmt.Sprintf("FAULT scenario=%s committed=%d handled=%d lost=%d rolledback_handled=%d duplicates=%d inbox_duplicates=%d",
		scenario, s.Committed, s.Handled, s.Lost, s.RolledBackHandled, s.Duplicates, s.InboxDuplicates)
}

func (w *world) table(name string) string { return faulttest.Table(w.schema, name) }

func (w *world) stats() (stats, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	switch w.storage {
	case "mysql":
		return w.statsMySQL(ctx)
	case "mongodb":
		return w.statsMongo(ctx)
	}
	orders, handled, rolled := w.table("orders"), w.table("handled"), w.table("rolled_back")
	both := `EXISTS (SELECT 1 FROM ` + handled + ` h WHERE h.grp = '` + faulttest.GroupPlain + `' AND h.n = o.n)
		AND EXISTS (SELECT 1 FROM ` + handled + ` h WHERE h.grp = '` + faulttest.GroupInbox + `' AND h.n = o.n)`
	pending := func(t string) string {
		return `(SELECT count(*) FROM ` + w.table(t) + ` WHERE "NextAttemptAt" IS NOT NULL OR "StatusName" <> 'Succeeded')`
	}
	dups := func(group string) string {
		return `(SELECT count(*) - count(DISTINCT n) FROM ` + handled + ` WHERE grp = '` + group + `')`
	}
	var s stats
	err := w.e.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM `+orders+`),
		(SELECT count(*) FROM `+orders+` o WHERE `+both+`),
		(SELECT count(*) FROM `+orders+` o WHERE NOT (`+both+`)),
		(SELECT count(DISTINCT n) FROM `+handled+` h WHERE NOT EXISTS (SELECT 1 FROM `+orders+` o WHERE o.n = h.n)),
		`+dups(faulttest.GroupPlain)+`,
		`+dups(faulttest.GroupInbox)+`,
		(SELECT count(*) FROM `+rolled+`),
		(SELECT count(*) FROM `+rolled+` r JOIN `+orders+` o USING (n)),
		`+pending("published")+`,
		`+pending("received")).Scan(&s.Committed, &s.Handled, &s.Lost, &s.RolledBackHandled, &s.Duplicates,
		&s.InboxDuplicates, &s.RolledBack, &s.RolledBackCommit, &s.PendingPublished, &s.PendingReceived)
	return s, err
}

// explain logs what is known of the messages a check found wrong: lost
// orders, rows left unfinished, and the end of every program's log.
func (w *world) explain() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	switch w.storage {
	case "mysql":
		w.explainMySQL(ctx)
		return
	case "mongodb":
		w.explainMongo(ctx)
		return
	}
	queries := map[string]string{
		"lost orders": `SELECT o.n, o.producer, o.via,
				(SELECT string_agg(grp || '@' || instance, ',') FROM ` + w.table("handled") + ` h WHERE h.n = o.n),
				(SELECT string_agg(p."StatusName" || '/' || p."Retries" || '/' || COALESCE(p."NextAttemptAt"::text, '-'), ',')
					FROM ` + w.table("published") + ` p WHERE (p."Content"::jsonb #>> '{Value,n}') = o.n::text),
				(SELECT string_agg(r."Group" || ':' || r."StatusName" || '/' || r."Retries" || '/' || COALESCE(r."NextAttemptAt"::text, '-'), ',')
					FROM ` + w.table("received") + ` r WHERE (r."Content"::jsonb #>> '{Value,n}') = o.n::text)
			FROM ` + w.table("orders") + ` o
			WHERE NOT EXISTS (SELECT 1 FROM ` + w.table("handled") + ` h WHERE h.grp = 'plain' AND h.n = o.n)
				OR NOT EXISTS (SELECT 1 FROM ` + w.table("handled") + ` h WHERE h.grp = 'inbox' AND h.n = o.n)
			ORDER BY o.n LIMIT 10`,
		"unfinished published rows": `SELECT "Id", "StatusName", "Retries", "NextAttemptAt", "Content"::jsonb #>> '{Headers,cap-exception}'
			FROM ` + w.table("published") + ` WHERE "NextAttemptAt" IS NOT NULL OR "StatusName" <> 'Succeeded' LIMIT 10`,
		"unfinished received rows": `SELECT "Id", "Group", "StatusName", "Retries", "NextAttemptAt", "Content"::jsonb #>> '{Headers,cap-exception}'
			FROM ` + w.table("received") + ` WHERE "NextAttemptAt" IS NOT NULL OR "StatusName" <> 'Succeeded' LIMIT 10`,
		"inbox duplicates": `SELECT n, string_agg(instance || ' ' || msg_id || ' ' || at::text, ', ') FROM ` + w.table("handled") + `
			WHERE grp = 'inbox' GROUP BY n HAVING count(*) > 1 LIMIT 10`,
		"plain duplicates": `SELECT n, string_agg(instance || ' ' || at::text, ', ') FROM ` + w.table("handled") + `
			WHERE grp = 'plain' GROUP BY n HAVING count(*) > 1 LIMIT 10`,
	}
	for title, q := range queries {
		rows, err := w.e.pool.Query(ctx, q)
		if err != nil {
			w.t.Logf("%s: %v", title, err)
			continue
		}
		var lines []string
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				break
			}
			lines = append(lines, fmt.Sprint(vals))
		}
		rows.Close()
		if len(lines) > 0 {
			w.t.Logf("%s:\n  %s", title, strings.Join(lines, "\n  "))
		}
	}
	for _, p := range append(append([]*proc{}, w.producers...), w.consumers...) {
		w.t.Logf("end of %s:\n%s", p.log.Name(), p.tail(25))
	}
}
