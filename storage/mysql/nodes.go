package mysql

import (
	"context"
	"fmt"
	"time"

	"github.com/go-cap/cap/internal/nodeinfo"
	"github.com/go-cap/cap/storage"
)

var _ storage.NodeRegistry = (*Store)(nil)

// heartbeat upserts a node's row of the Lock table. Arguments: key,
// instance.
func (q *queries) heartbeat() string {
	return `INSERT INTO ` + q.lockTable() + ` (` + "`Key`" + `, Instance, LastLockTime)
		VALUES (?, ?, UTC_TIMESTAMP(6))
		ON DUPLICATE KEY UPDATE Instance = VALUES(Instance), LastLockTime = VALUES(LastLockTime)`
}

// pruneNodes deletes the node rows, other than the key of the first
// argument, that no heartbeat renewed within the second (microseconds).
func (q *queries) pruneNodes() string {
	return `DELETE FROM ` + q.lockTable() + ` WHERE ` + "`Key`" + ` LIKE '` + nodeinfo.Pattern + `'
		AND ` + "`Key`" + ` <> ? AND LastLockTime < UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND`
}

// nodes reads the node rows seen within the argument's microseconds.
func (q *queries) nodes() string {
	return `SELECT ` + "`Key`" + `, COALESCE(Instance, ''), LastLockTime FROM ` + q.lockTable() + `
		WHERE ` + "`Key`" + ` LIKE '` + nodeinfo.Pattern + `'
		AND LastLockTime >= UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND ORDER BY ` + "`Key`"
}

func (q *queries) removeNode() string {
	return `DELETE FROM ` + q.lockTable() + ` WHERE ` + "`Key`" + ` = ?`
}

// Heartbeat implements storage.NodeRegistry with a row of CAP's Lock table.
func (s *Store) Heartbeat(ctx context.Context, n storage.Node) error {
	key := nodeinfo.Key(n.ID)
	if _, err := s.db.ExecContext(ctx, s.q.heartbeat(), key, nodeinfo.Instance(n)); err != nil {
		return fmt.Errorf("mysql: heartbeat: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, s.q.pruneNodes(), key, nodeinfo.Retention.Microseconds()); err != nil {
		return fmt.Errorf("mysql: heartbeat: forget old nodes: %w", err)
	}
	return nil
}

// Nodes implements storage.NodeRegistry.
func (s *Store) Nodes(ctx context.Context, within time.Duration) ([]storage.Node, error) {
	rs, err := s.db.QueryContext(ctx, s.q.nodes(), within.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("mysql: nodes: %w", err)
	}
	defer rs.Close()
	out, err := nodeinfo.Scan(rs)
	if err != nil {
		return nil, fmt.Errorf("mysql: nodes: %w", err)
	}
	return out, nil
}

// RemoveNode implements storage.NodeRegistry.
func (s *Store) RemoveNode(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, s.q.removeNode(), nodeinfo.Key(id)); err != nil {
		return fmt.Errorf("mysql: remove node: %w", err)
	}
	return nil
}
