package memory

import (
	"context"

	"github.com/go-cap/cap/storage"
)

var _ storage.ReceivedChecker = (*Storage)(nil)

// ReceivedExists reports for each key whether a Received row with its
// (MessageID, Group) is stored.
func (s *Storage) ReceivedExists(ctx context.Context, keys []storage.ReceivedKey) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.tables[storage.Received]
	out := make([]bool, len(keys))
	for i, k := range keys {
		_, out[i] = tb.keys[dedupKey{k.MessageID, k.Group}]
	}
	return out, nil
}
