package sqlserver

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-cap/cap/storage"
)

var _ storage.ReceivedChecker = (*Store)(nil)

// maxExistsKeys bounds the keys of one look-up statement: two parameters
// each, within maxParams, and no more rows than a table value constructor
// is sure to take (1,000).
const maxExistsKeys = 1000

// receivedExists returns the statements that read which keys have a
// Received row: the positions (1-based, within the statement) of those
// that do, each an EXISTS over the unique (MessageId, Group) index. Its
// filter (MessageId IS NOT NULL) is repeated for the optimizer to match
// the index. MessageId compares in its column's binary collation, Group in
// the database's, as the index compares them.
func (q *queries) receivedExists(keys []storage.ReceivedKey) []stmt {
	tb := q.table(storage.Received)
	var out []stmt
	for _, c := range chunks(len(keys), maxExistsKeys) {
		part := keys[c[0]:c[1]]
		var b strings.Builder
		args := make([]any, 0, 2*len(part))
		b.WriteString(`SELECT k.i FROM (VALUES `)
		for i, k := range part {
			if i > 0 {
				b.WriteString(",\n\t")
			}
			b.WriteString(`(` + strconv.Itoa(i+1) + `, ` + param(len(args)+1) + `, ` + param(len(args)+2) + `)`)
			args = append(args, k.MessageID, k.Group)
		}
		b.WriteString(`) AS k(i, msgid, grp)
WHERE EXISTS (SELECT 1 FROM ` + tb.name + ` AS r
	WHERE r.[MessageId] IS NOT NULL AND r.[MessageId] = k.msgid AND r.[Group] = k.grp)`)
		out = append(out, stmt{b.String(), args})
	}
	return out
}

// ReceivedExists reports for each key whether a Received row with its
// (MessageID, Group) exists, in one statement per 1,000 keys (in one
// transaction when there are more).
func (s *Store) ReceivedExists(ctx context.Context, keys []storage.ReceivedKey) ([]bool, error) {
	out := make([]bool, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	err := s.run(ctx, s.q.receivedExists(keys), func(q querier, n int, st stmt) error {
		if n == 0 {
			clear(out) // a transaction run again starts over
		}
		from := n * maxExistsKeys
		rs, err := q.QueryContext(ctx, st.query, st.args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var i int64
			if err := rs.Scan(&i); err != nil {
				return err
			}
			if i >= 1 && from+int(i) <= len(out) {
				out[from+int(i)-1] = true
			}
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlserver: look up received rows: %w", err)
	}
	return out, nil
}
