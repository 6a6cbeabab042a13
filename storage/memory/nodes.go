package memory

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/go-cap/cap/storage"
)

var _ storage.NodeRegistry = (*Storage)(nil)

// nodeRetention is how long a node no heartbeat renewed is kept.
const nodeRetention = 24 * time.Hour

// Heartbeat implements storage.NodeRegistry.
func (s *Storage) Heartbeat(_ context.Context, n storage.Node) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.nodes == nil {
		s.nodes = map[string]storage.Node{}
	}
	for id, old := range s.nodes {
		if id != n.ID && old.LastSeen.Before(now.Add(-nodeRetention)) {
			delete(s.nodes, id)
		}
	}
	n.Started, n.LastSeen = n.Started.UTC().Truncate(time.Microsecond), now
	s.nodes[n.ID] = n
	return nil
}

// Nodes implements storage.NodeRegistry.
func (s *Storage) Nodes(_ context.Context, within time.Duration) ([]storage.Node, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	since := s.now().Add(-within)
	var out []storage.Node
	for _, n := range s.nodes {
		if !n.LastSeen.Before(since) {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b storage.Node) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// RemoveNode implements storage.NodeRegistry.
func (s *Storage) RemoveNode(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.nodes, id)
	return nil
}
