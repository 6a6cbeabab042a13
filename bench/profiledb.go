package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
)

// startProfileDB resets PostgreSQL's pg_stat_statements for -profile-db
// and returns the function that prints, at the end of the run, the
// statements that took the most execution time, per message sent (n: the
// Published rows marked Succeeded in the run). The whole run is measured,
// baseline phases included: their statements are told apart by their text.
func startProfileDB(ctx context.Context, pool *pgxpool.Pool) (func(ctx context.Context, out *report, n int64), error) {
	if pool == nil {
		return nil, errors.New("-profile-db needs -storage postgres")
	}
	var libs string
	if err := pool.QueryRow(ctx, `SHOW shared_preload_libraries`).Scan(&libs); err != nil {
		return nil, fmt.Errorf("-profile-db: %w", err)
	}
	if !strings.Contains(libs, "pg_stat_statements") {
		return nil, errors.New("-profile-db: pg_stat_statements is not loaded; as a superuser run " +
			"ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements' (keeping any libraries already listed), " +
			"restart PostgreSQL (pg_ctlcluster <version> main restart), and run again")
	}
	if _, err := pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		return nil, fmt.Errorf("-profile-db: %w", err)
	}
	if _, err := pool.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
		return nil, fmt.Errorf("-profile-db: %w", err)
	}
	return func(ctx context.Context, out *report, n int64) {
		rows, err := pool.Query(ctx, `SELECT calls, rows, total_exec_time, query FROM pg_stat_statements
			WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
			ORDER BY total_exec_time DESC LIMIT 12`)
		if err != nil {
			out.linef("profile-db: %v", err)
			return
		}
		defer rows.Close()
		out.linef("profile-db: top statements by execution time (whole run; per message: over %d messages sent)", n)
		for rows.Next() {
			var calls, nrows int64
			var total float64
			var query string
			if err := rows.Scan(&calls, &nrows, &total, &query); err != nil {
				out.linef("profile-db: %v", err)
				return
			}
			per := 0.0
			if n > 0 {
				per = total * 1000 / float64(n)
			}
			query = strings.Join(strings.Fields(query), " ")
			if len(query) > 110 {
				query = query[:110] + "..."
			}
			out.linef("  %8.1f µs/msg  %9.0f ms  %7d calls  %6.1f rows/call  %s", per, total, calls,
				float64(nrows)/float64(max(calls, 1)), query)
		}
	}, nil
}
