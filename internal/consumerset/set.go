// Package consumerset keeps the open consumers of a transport so that the
// transport's Close can close them, and refuses new ones once it is closed.
// The broker transports share it; it imports no driver.
package consumerset

import "sync"

// Set is the open consumers of one transport and whether the transport is
// closed. The zero value is not usable: call New. It is safe for concurrent
// use.
type Set[C comparable] struct {
	mu      sync.Mutex
	members map[C]struct{}
	closed  chan struct{}
}

// New returns an empty, open set.
func New[C comparable]() *Set[C] {
	return &Set[C]{members: make(map[C]struct{}), closed: make(chan struct{})}
}

// Add registers c; it reports false, and registers nothing, once the set is
// closed.
func (s *Set[C]) Add(c C) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.IsClosed() {
		return false
	}
	s.members[c] = struct{}{}
	return true
}

// Remove forgets c; removing a consumer that is not there does nothing.
func (s *Set[C]) Remove(c C) {
	s.mu.Lock()
	delete(s.members, c)
	s.mu.Unlock()
}

// Each calls fn for every registered consumer, with the set locked: fn must
// not call Add, Remove or Close.
func (s *Set[C]) Each(fn func(C)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.members {
		fn(c)
	}
}

// IsClosed reports whether Close has been called.
func (s *Set[C]) IsClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// Close marks the set closed and returns the consumers registered at that
// moment, for the caller to close; first is false, and open nil, when the
// set was closed already. Consumers keep calling Remove as they close.
func (s *Set[C]) Close() (open []C, first bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.IsClosed() {
		return nil, false
	}
	close(s.closed)
	open = make([]C, 0, len(s.members))
	for c := range s.members {
		open = append(open, c)
	}
	return open, true
}
