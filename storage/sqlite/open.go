package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	msqlite "modernc.org/sqlite"
)

// BusyTimeout is how long a connection opened by Open waits for the write
// lock before failing with SQLITE_BUSY.
const BusyTimeout = 10 * time.Second

// Open opens the SQLite database at path with the settings several
// concurrent writers need, and returns it ready for New:
//
//   - every read-write transaction begins with BEGIN IMMEDIATE
//     (_txlock=immediate), so a transaction takes the write lock when it
//     starts and waits for it, instead of failing when it later upgrades a
//     read lock;
//   - PRAGMA busy_timeout makes a connection wait up to BusyTimeout for
//     that lock;
//   - PRAGMA journal_mode=WAL lets readers run while one connection writes;
//   - writers wait for each other in the process, in the order they came,
//     rather than in SQLite's busy handler, which sleeps up to 100 ms at a
//     time and lets a busy writer take the lock again and again before a
//     sleeping one wakes: a transaction waits from BEGIN, and a statement
//     run with Exec outside a transaction while it runs, up to BusyTimeout
//     (then ErrWriteLockTimeout).
//
// path is a file name ("app.db") or a SQLite URI ("file:app.db?mode=rwc");
// query parameters already in it are kept.
//
// ":memory:" opens a database private to one connection, so Open limits the
// pool of an in-memory database (":memory:", "file::memory:", or a URI with
// mode=memory, such as "file:NAME?mode=memory&cache=shared") to a single
// connection that stays open: every statement then sees the same data, and
// the data lives until the *sql.DB is closed. With one connection, a
// goroutine that holds a transaction and calls a method that needs its own
// waits for itself: commit first.
func Open(path string) (*sql.DB, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	memory := isMemory(path)
	params := url.Values{}
	params.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	if !memory {
		// An in-memory database has no WAL; its journal stays in memory.
		params.Add("_pragma", "journal_mode(WAL)")
	}
	params.Set("_txlock", "immediate")
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	conn, err := msqlite.NewConnector(path + sep + params.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	db := sql.OpenDB(&gatedConnector{Connector: conn, gate: newGate(BusyTimeout)})
	if memory {
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		db.SetConnMaxLifetime(0)
		db.SetConnMaxIdleTime(0)
	}
	// sql.Open connects lazily: connect now, so a bad path or parameter
	// fails here, and an in-memory database keeps its one connection.
	if err := db.PingContext(context.Background()); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return db, nil
}

// isMemory reports whether path names an in-memory database.
func isMemory(path string) bool {
	name, query, _ := strings.Cut(path, "?")
	if name == ":memory:" || name == "file::memory:" {
		return true
	}
	if !strings.HasPrefix(name, "file:") {
		return false
	}
	q, err := url.ParseQuery(query)
	return err == nil && q.Get("mode") == "memory"
}
