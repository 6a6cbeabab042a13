package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/go-cap/cap/internal/nodeinfo"
	"github.com/go-cap/cap/storage"
)

var _ storage.NodeRegistry = (*Store[pgx.Tx])(nil)

// heartbeat upserts a node's row of the Lock table and deletes the other
// node rows no heartbeat renewed within the retention. Arguments: key,
// instance, retention in microseconds.
func (q *queries) heartbeat() string {
	return `WITH pruned AS (DELETE FROM ` + q.lockTable() + ` WHERE "Key" LIKE '` + nodeinfo.Pattern + `'
			AND "Key" <> $1 AND "LastLockTime" < ` + nowUTC + ` - ` + micros("$3") + `)
		INSERT INTO ` + q.lockTable() + ` ("Key", "Instance", "LastLockTime") VALUES ($1, $2, ` + nowUTC + `)
		ON CONFLICT ("Key") DO UPDATE SET "Instance" = EXCLUDED."Instance", "LastLockTime" = EXCLUDED."LastLockTime"`
}

// nodes reads the node rows seen within $1 microseconds.
func (q *queries) nodes() string {
	return `SELECT "Key", COALESCE("Instance", ''), "LastLockTime" FROM ` + q.lockTable() + `
		WHERE "Key" LIKE '` + nodeinfo.Pattern + `' AND "LastLockTime" >= ` + nowUTC + ` - ` + micros("$1") + `
		ORDER BY "Key"`
}

func (q *queries) removeNode() string {
	return `DELETE FROM ` + q.lockTable() + ` WHERE "Key" = $1`
}

// Heartbeat implements storage.NodeRegistry with a row of CAP's Lock table.
func (s *Store[TTx]) Heartbeat(ctx context.Context, n storage.Node) error {
	if _, err := s.b.db().exec(ctx, s.q.heartbeat(), nodeinfo.Key(n.ID), nodeinfo.Instance(n),
		nodeinfo.Retention.Microseconds()); err != nil {
		return fmt.Errorf("postgres: heartbeat: %w", err)
	}
	return nil
}

// Nodes implements storage.NodeRegistry.
func (s *Store[TTx]) Nodes(ctx context.Context, within time.Duration) ([]storage.Node, error) {
	rs, err := s.b.db().query(ctx, s.q.nodes(), within.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("postgres: nodes: %w", err)
	}
	defer rs.Close()
	out, err := nodeinfo.Scan(rs)
	if err != nil {
		return nil, fmt.Errorf("postgres: nodes: %w", err)
	}
	return out, nil
}

// RemoveNode implements storage.NodeRegistry.
func (s *Store[TTx]) RemoveNode(ctx context.Context, id string) error {
	if _, err := s.b.db().exec(ctx, s.q.removeNode(), nodeinfo.Key(id)); err != nil {
		return fmt.Errorf("postgres: remove node: %w", err)
	}
	return nil
}
