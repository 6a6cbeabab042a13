package engine

import (
	"context"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/transport"
)

// Reply is the callback message a handler produced, already built as a
// Published row leased to this instance.
type Reply struct {
	Record  *storage.Record
	Message *message.Message
}

// Subscriber is one registered handler.
type Subscriber[TTx any] struct {
	Topic string       // final topic or pattern
	Group string       // final group name
	Retry retry.Policy // nil: Config.HandlerRetry
	// Tx asks for a transaction: Invoke's writes and the Received row's
	// status commit together.
	Tx bool
	// Invoke runs the handler; tx is valid only when Tx is set. retries is
	// the number of failed attempts so far.
	Invoke func(ctx context.Context, tx TTx, msg *message.Message, retries int) (*Reply, error)
}

// Registry holds the subscribers by group.
type Registry[TTx any] struct {
	groups map[string][]*Subscriber[TTx]
	order  []string
}

// Add registers s; it reports false when (topic, group) is taken.
func (r *Registry[TTx]) Add(s *Subscriber[TTx]) bool {
	if r.groups == nil {
		r.groups = map[string][]*Subscriber[TTx]{}
	}
	for _, o := range r.groups[s.Group] {
		if o.Topic == s.Topic {
			return false
		}
	}
	if _, ok := r.groups[s.Group]; !ok {
		r.order = append(r.order, s.Group)
	}
	r.groups[s.Group] = append(r.groups[s.Group], s)
	return true
}

// Find returns the subscriber of group for topic name: an exact
// (case-insensitive) match first, then the first matching wildcard.
func (r *Registry[TTx]) Find(group, name string) *Subscriber[TTx] {
	subs := r.groups[group]
	for _, s := range subs {
		if !transport.IsWildcard(s.Topic) && transport.Match(s.Topic, name) {
			return s
		}
	}
	for _, s := range subs {
		if transport.IsWildcard(s.Topic) && transport.Match(s.Topic, name) {
			return s
		}
	}
	return nil
}

// Groups returns the group names in registration order.
func (r *Registry[TTx]) Groups() []string { return r.order }

// Topics returns the topics of group.
func (r *Registry[TTx]) Topics(group string) []string {
	var ts []string
	for _, s := range r.groups[group] {
		ts = append(ts, s.Topic)
	}
	return ts
}

// All returns every subscriber.
func (r *Registry[TTx]) All() []*Subscriber[TTx] {
	var all []*Subscriber[TTx]
	for _, g := range r.order {
		all = append(all, r.groups[g]...)
	}
	return all
}
