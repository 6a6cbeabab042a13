package sqlserver

import (
	"context"
	"fmt"
	"time"

	"github.com/go-cap/cap/internal/nodeinfo"
	"github.com/go-cap/cap/storage"
)

var _ storage.NodeRegistry = (*Store)(nil)

// isNode is the condition on the node rows of the Lock table: their keys
// start with nodeinfo.KeyPrefix. A constant prefix lets SQL Server seek
// the primary key's range.
var isNode = `[Key] LIKE ` + literal(likePrefix(nodeinfo.KeyPrefix)) + ` ESCAPE '\'`

// heartbeat upserts a node's row of the Lock table, seen now. Arguments:
// key, instance.
func (q *queries) heartbeat(key, instance string) stmt {
	return stmt{`MERGE ` + q.lockTable() + ` WITH (HOLDLOCK) AS l
USING (SELECT @p1 AS k, @p2 AS inst) AS v
ON l.[Key] = v.k
WHEN MATCHED THEN
	UPDATE SET [Instance] = v.inst, [LastLockTime] = ` + nowUTC + `
WHEN NOT MATCHED THEN
	INSERT ([Key], [Instance], [LastLockTime]) VALUES (v.k, v.inst, ` + nowUTC + `);`, []any{key, instance}}
}

// pruneNodes deletes the node rows, other than key's, that no heartbeat
// renewed within retention.
func (q *queries) pruneNodes(key string, retention time.Duration) stmt {
	return stmt{`DELETE FROM ` + q.lockTable() + `
WHERE ` + isNode + ` AND [Key] <> @p1 AND [LastLockTime] < ` + addMicros("@p2", nowUTC),
		[]any{key, micros(-retention)}}
}

// nodes reads the node rows seen within the last within.
func (q *queries) nodes(within time.Duration) stmt {
	return stmt{`SELECT [Key], ISNULL([Instance], N''), [LastLockTime] FROM ` + q.lockTable() + `
WHERE ` + isNode + ` AND [LastLockTime] >= ` + addMicros("@p1", nowUTC) + `
ORDER BY [Key]`, []any{micros(-within)}}
}

func (q *queries) removeNode(key string) stmt {
	return stmt{`DELETE FROM ` + q.lockTable() + ` WHERE [Key] = @p1`, []any{key}}
}

// Heartbeat implements storage.NodeRegistry with a row of CAP's Lock
// table, then forgets the nodes no heartbeat renewed for
// nodeinfo.Retention.
func (s *Store) Heartbeat(ctx context.Context, n storage.Node) error {
	key := nodeinfo.Key(n.ID)
	if err := s.execOne(ctx, s.q.heartbeat(key, nodeinfo.Instance(n))); err != nil {
		return fmt.Errorf("sqlserver: heartbeat: %w", err)
	}
	if err := s.execOne(ctx, s.q.pruneNodes(key, nodeinfo.Retention)); err != nil {
		return fmt.Errorf("sqlserver: heartbeat: forget old nodes: %w", err)
	}
	return nil
}

// Nodes implements storage.NodeRegistry.
func (s *Store) Nodes(ctx context.Context, within time.Duration) ([]storage.Node, error) {
	st := s.q.nodes(within)
	rs, err := s.db.QueryContext(ctx, st.query, st.args...)
	if err != nil {
		return nil, fmt.Errorf("sqlserver: nodes: %w", err)
	}
	defer rs.Close()
	var out []storage.Node
	for rs.Next() {
		var (
			key, inst string
			seen      time.Time
		)
		if err := rs.Scan(&key, &inst, &seen); err != nil {
			return nil, fmt.Errorf("sqlserver: nodes: %w", err)
		}
		if n, ok := nodeinfo.Decode(key, inst, seen); ok {
			out = append(out, n)
		}
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("sqlserver: nodes: %w", err)
	}
	return out, nil
}

// RemoveNode implements storage.NodeRegistry.
func (s *Store) RemoveNode(ctx context.Context, id string) error {
	if err := s.execOne(ctx, s.q.removeNode(nodeinfo.Key(id))); err != nil {
		return fmt.Errorf("sqlserver: remove node: %w", err)
	}
	return nil
}
