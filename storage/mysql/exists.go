package mysql

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-cap/cap/storage"
)

var _ storage.ReceivedChecker = (*Store)(nil)

// maxExistsKeys bounds the keys of one look-up statement.
const maxExistsKeys = 200

// exists returns the positions (1-based) of the n keys that have a Received
// row. Each key is an EXISTS of its own over the unique (MessageId, Group)
// index, its values compared in the columns' collations as the index
// compares them (MessageId is binary). A derived table of the keys would
// give its columns the connection's collation and make MySQL refuse the
// comparison with a binary column.
func (q *tableQueries) exists(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(" UNION ALL ")
		}
		b.WriteString("SELECT ")
		b.WriteString(strconv.Itoa(i + 1))
		b.WriteString(" FROM DUAL WHERE EXISTS (SELECT 1 FROM ")
		b.WriteString(q.name)
		b.WriteString(" WHERE `MessageId` = ? AND `Group` = ?)")
	}
	return b.String()
}

// ReceivedExists reports for each key whether a Received row with its
// (MessageID, Group) exists, in one statement per 200 keys.
func (s *Store) ReceivedExists(ctx context.Context, keys []storage.ReceivedKey) ([]bool, error) {
	out := make([]bool, len(keys))
	tq := &s.q.tables[storage.Received]
	for from := 0; from < len(keys); from += maxExistsKeys {
		part := keys[from:min(from+maxExistsKeys, len(keys))]
		args := make([]any, 0, 2*len(part))
		for _, k := range part {
			args = append(args, k.MessageID, k.Group)
		}
		rs, err := s.db.QueryContext(ctx, tq.exists(len(part)), args...)
		if err != nil {
			return nil, fmt.Errorf("mysql: look up received rows: %w", err)
		}
		for rs.Next() {
			var i int
			if err := rs.Scan(&i); err != nil {
				_ = rs.Close()
				return nil, fmt.Errorf("mysql: look up received rows: %w", err)
			}
			if i >= 1 && i <= len(part) {
				out[from+i-1] = true
			}
		}
		err = rs.Err()
		_ = rs.Close()
		if err != nil {
			return nil, fmt.Errorf("mysql: look up received rows: %w", err)
		}
	}
	return out, nil
}
