package sqlite

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPartialIndexes: the claims and the collector read through their
// partial indexes, and Migrate replaces indexes an earlier version made
// whole.
func TestPartialIndexes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, err := Open(filepath.Join(t.TempDir(), "cap.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	s, err := New(db, Options{})
	require.NoError(t, err)
	// The whole indexes of an earlier version.
	for _, stmt := range s.sql.migrate {
		_, err := db.ExecContext(ctx, stmt)
		require.NoError(t, err)
	}
	for _, idx := range s.sql.indexes {
		whole, _, _ := strings.Cut(idx.create, " WHERE ")
		_, err := db.ExecContext(ctx, whole)
		require.NoError(t, err)
	}
	require.NoError(t, s.Migrate(ctx))
	for _, idx := range s.sql.indexes {
		var def string
		require.NoError(t, db.QueryRowContext(ctx, `SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?`,
			idx.name).Scan(&def))
		require.Equal(t, idx.partial, strings.Contains(def, " WHERE "), "%s: %s", idx.name, def)
	}

	plan := func(query string, args ...any) string {
		rows, err := db.QueryContext(ctx, `EXPLAIN QUERY PLAN `+query, args...)
		require.NoError(t, err)
		defer rows.Close()
		var b strings.Builder
		for rows.Next() {
			var id, parent, unused int
			var detail string
			require.NoError(t, rows.Scan(&id, &parent, &unused, &detail))
			b.WriteString(detail + "\n")
		}
		require.NoError(t, rows.Err())
		return b.String()
	}
	now := "2026-01-01 00:00:00.000"
	for _, tbl := range []*tableSQL{&s.sql.published, &s.sql.received} {
		claimArgs := []any{"v1", now, 100}
		if tbl == &s.sql.received {
			claimArgs = append(claimArgs, `["g"]`)
		}
		require.Contains(t, plan(tbl.claimSelect, claimArgs...), "_Version_NextAttemptAt", "claim")
		require.Contains(t, plan(tbl.claimProbe, "v1", now, `["g"]`), "_Version_NextAttemptAt", "claim probe")
		require.Contains(t, plan(tbl.deleteExpired, now, 100), "_ExpiresAt_StatusName", "collector")
	}
}
