package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-cap/cap/storage"
)

// Migrate creates the schema, the tables and their indexes when absent, and
// upgrades tables created by DotNetCore.CAP in place: it adds the
// NextAttemptAt and MessageId columns, makes CAP's pending rows due, and
// replaces the INCLUDE variant of CAP's Version index that rejects large
// contents. It runs in one transaction under an advisory lock, so instances
// starting together migrate one after the other; it is idempotent.
//
// Index builds on a large existing table block writes to it while they run.
func (s *Store[TTx]) Migrate(ctx context.Context) (err error) {
	tx, err := s.b.begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer func() {
		if err != nil {
			_ = s.b.rollback(context.WithoutCancel(ctx), tx)
		}
	}()
	q := s.b.in(tx)
	// Held until the transaction ends; CREATE ... IF NOT EXISTS alone races
	// with a concurrent creator.
	if _, err := q.exec(ctx, s.q.lock, s.q.lockKey); err != nil {
		return fmt.Errorf("postgres: migrate: lock: %w", err)
	}
	if _, err := q.exec(ctx, s.q.createSchema); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	if _, err := q.exec(ctx, s.q.createLock()); err != nil {
		return fmt.Errorf("postgres: migrate lock table: %w", err)
	}
	for _, t := range []storage.Table{storage.Received, storage.Published} {
		if err := s.migrateTable(ctx, q, t); err != nil {
			return fmt.Errorf("postgres: migrate %s: %w", t, err)
		}
	}
	if err := s.b.commit(ctx, tx); err != nil {
		return fmt.Errorf("postgres: migrate: commit: %w", err)
	}
	return nil
}

func (s *Store[TTx]) migrateTable(ctx context.Context, q querier, t storage.Table) error {
	tq := s.q.tables[t]
	existed, err := queryBool(ctx, q, s.q.tableExists, s.q.schema, t.String())
	if err != nil {
		return err
	}
	upgrade := false
	if existed {
		has, err := queryBool(ctx, q, s.q.columnExists, s.q.schema, t.String(), "NextAttemptAt")
		if err != nil {
			return err
		}
		upgrade = !has
		// CAP's INCLUDE variant of its Version index, and a status index
		// made whole by an earlier version of this storage.
		if err := s.dropIndexIf(ctx, q, versionIndex(t), func(def string) bool {
			return strings.Contains(strings.ToUpper(def), " INCLUDE ")
		}); err != nil {
			return err
		}
		if err := s.dropIndexIf(ctx, q, statusIndex(t), func(def string) bool {
			return !strings.Contains(strings.ToUpper(def), " WHERE ")
		}); err != nil {
			return err
		}
	}
	if _, err := q.exec(ctx, tq.createTable); err != nil {
		return err
	}
	for _, stmt := range tq.migrate {
		if _, err := q.exec(ctx, stmt); err != nil {
			return err
		}
	}
	if upgrade {
		if _, err := q.exec(ctx, tq.backfill); err != nil {
			return err
		}
	}
	return nil
}

// dropIndexIf drops an existing index of the schema whose definition drop
// accepts.
func (s *Store[TTx]) dropIndexIf(ctx context.Context, q querier, index string, drop func(def string) bool) error {
	def, err := queryString(ctx, q, s.q.indexDefinition, s.q.schema, index)
	if err != nil || def == "" || !drop(def) {
		return err
	}
	_, err = q.exec(ctx, s.q.dropIndex(index))
	return err
}

func queryBool(ctx context.Context, q querier, query string, args ...any) (bool, error) {
	var b bool
	err := queryRow(ctx, q, query, args, &b)
	return b, err
}

func queryString(ctx context.Context, q querier, query string, args ...any) (string, error) {
	var s string
	err := queryRow(ctx, q, query, args, &s)
	return s, err
}

// queryRow reads the single row of a query that always returns one.
func queryRow(ctx context.Context, q querier, query string, args []any, dest ...any) error {
	rs, err := q.query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rs.Close()
	if !rs.Next() {
		if err := rs.Err(); err != nil {
			return err
		}
		return fmt.Errorf("no row from %q", query)
	}
	if err := rs.Scan(dest...); err != nil {
		return err
	}
	rs.Close()
	return rs.Err()
}
