package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/go-cap/cap/storage"
)

var _ storage.ReceivedChecker = (*Store[pgx.Tx])(nil)

// existsQuery returns the indices (1-based) of the keys that have a row,
// through the unique (MessageId, Group) index. The look-up is a LATERAL
// subquery with LIMIT 1, not EXISTS: a prepared statement's generic plan
// made while the table was empty or not yet analyzed (a new deployment,
// the first minute of a bus) chose a hash join over a sequential scan of
// the whole table for EXISTS, kept until the next ANALYZE; a LATERAL probe
// per key is a nested loop over the index whatever the statistics say.
func existsQuery(table string) string {
	return `SELECT k.i FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(msgid, grp, i)
		CROSS JOIN LATERAL (SELECT 1 FROM ` + table + ` r WHERE r."MessageId" = k.msgid AND r."Group" = k.grp LIMIT 1) AS hit`
}

// ReceivedExists reports for each key whether a Received row with its
// (MessageID, Group) exists, in one statement.
func (s *Store[TTx]) ReceivedExists(ctx context.Context, keys []storage.ReceivedKey) ([]bool, error) {
	out := make([]bool, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	msgIDs := make([]string, len(keys))
	groups := make([]string, len(keys))
	for i, k := range keys {
		msgIDs[i], groups[i] = k.MessageID, k.Group
	}
	rs, err := s.b.db().query(ctx, s.q.exists, msgIDs, groups)
	if err != nil {
		return nil, fmt.Errorf("postgres: look up received rows: %w", err)
	}
	defer rs.Close()
	for rs.Next() {
		var i int64
		if err := rs.Scan(&i); err != nil {
			return nil, fmt.Errorf("postgres: look up received rows: %w", err)
		}
		if i >= 1 && int(i) <= len(out) {
			out[i-1] = true
		}
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("postgres: look up received rows: %w", err)
	}
	return out, nil
}
