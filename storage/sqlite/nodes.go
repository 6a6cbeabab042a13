package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/go-cap/cap/internal/nodeinfo"
	"github.com/go-cap/cap/storage"
)

var _ storage.NodeRegistry = (*Storage)(nil)

// Heartbeat implements storage.NodeRegistry with a row of CAP's Lock table,
// for buses of several processes on one database file.
func (s *Storage) Heartbeat(ctx context.Context, n storage.Node) error {
	at, key := now(), nodeinfo.Key(n.ID)
	if _, err := s.db.ExecContext(ctx, s.sql.lock.heartbeat, key, nodeinfo.Instance(n), formatTime(at)); err != nil {
		return fmt.Errorf("sqlite: heartbeat: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, s.sql.lock.pruneNodes, key, formatTime(at.Add(-nodeinfo.Retention))); err != nil {
		return fmt.Errorf("sqlite: heartbeat: forget old nodes: %w", err)
	}
	return nil
}

// Nodes implements storage.NodeRegistry.
func (s *Storage) Nodes(ctx context.Context, within time.Duration) ([]storage.Node, error) {
	rows, err := s.db.QueryContext(ctx, s.sql.lock.nodes, formatTime(now().Add(-within)))
	if err != nil {
		return nil, fmt.Errorf("sqlite: nodes: %w", err)
	}
	defer rows.Close()
	var out []storage.Node
	for rows.Next() {
		var key, inst, seen string
		if err := rows.Scan(&key, &inst, &seen); err != nil {
			return nil, fmt.Errorf("sqlite: nodes: %w", err)
		}
		t, err := parseTime(seen)
		if err != nil {
			return nil, fmt.Errorf("sqlite: nodes: %w", err)
		}
		if n, ok := nodeinfo.Decode(key, inst, t); ok {
			out = append(out, n)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: nodes: %w", err)
	}
	return out, nil
}

// RemoveNode implements storage.NodeRegistry.
func (s *Storage) RemoveNode(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, s.sql.lock.removeNode, nodeinfo.Key(id)); err != nil {
		return fmt.Errorf("sqlite: remove node: %w", err)
	}
	return nil
}
