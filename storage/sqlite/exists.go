package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/go-cap/cap/storage"
)

var _ storage.ReceivedChecker = (*Storage)(nil)

// ReceivedExists reports for each key whether a Received row with its
// (MessageID, Group) exists, reading through the unique (MessageId, Group)
// index without the write lock.
func (s *Storage) ReceivedExists(ctx context.Context, keys []storage.ReceivedKey) ([]bool, error) {
	out := make([]bool, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlite: look up received rows: %w", err)
	}
	defer conn.Close()
	stmt, err := conn.PrepareContext(ctx, s.sql.received.received)
	if err != nil {
		return nil, fmt.Errorf("sqlite: look up received rows: %w", err)
	}
	defer stmt.Close()
	for i, k := range keys {
		var one int
		switch err := stmt.QueryRowContext(ctx, k.MessageID, k.Group).Scan(&one); {
		case err == nil:
			out[i] = true
		case errors.Is(err, sql.ErrNoRows):
		default:
			return nil, fmt.Errorf("sqlite: look up received rows: %w", err)
		}
	}
	return out, nil
}
