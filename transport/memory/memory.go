// Package memory is an in-process broker that implements transport.Transport,
// for tests, examples and services that run in one process.
//
// Its semantics follow RabbitMQ's, the broker CAP is most often run on:
//
//   - A group gets a queue when it first subscribes. The queue's bindings are
//     the union of the topics its consumers subscribed, CAP wildcards
//     included (matched with transport.Match). Bindings stay while the
//     transport lives.
//   - Send copies the message into every queue with a matching binding.
//     A message sent to a topic no group is bound to is dropped, without an
//     error, as RabbitMQ's exchange drops it: subscribe before publishing.
//   - Consumers of one group compete for its queue; every group gets every
//     message.
//   - Ack removes a message. Reject puts it back at the front of its queue,
//     so it is the next message delivered, as RabbitMQ's requeue does.
//     Closing a consumer puts its unacknowledged messages back at the front,
//     in the order they were delivered.
//   - A queue and its messages survive while it has no open consumer; the
//     next consumer of the group resumes where the last one stopped.
//   - Queues are unbounded: a producer faster than its consumers grows
//     memory without limit.
//   - Nothing survives Close or the process: messages are kept in memory
//     only.
//
// Each Transport is a broker of its own; two Transports share nothing.
package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// ErrSettled is returned by Ack or Reject of a delivery that was already
// acknowledged or rejected.
var ErrSettled = errors.New("memory: delivery already acknowledged or rejected")

// maxRoutes bounds the topic → queues cache; past it the cache restarts.
const maxRoutes = 4096

var (
	_ transport.Transport = (*Transport)(nil)
	_ transport.Namer     = (*Transport)(nil)
)

// Transport is an in-process broker. It is safe for concurrent use.
type Transport struct {
	done chan struct{} // closed by Close

	mu     sync.Mutex
	closed bool
	queues map[string]*queue // by group
	// routes caches the queues each sent topic reaches; it is cleared
	// whenever a binding is added.
	routes map[string][]*queue
}

// Check implements transport.Checker: it fails only once the broker is
// closed.
func (t *Transport) Check(context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return transport.ErrClosed
	}
	return nil
}

// New returns an empty broker.
func New() *Transport {
	return &Transport{
		done:   make(chan struct{}),
		queues: make(map[string]*queue),
		routes: make(map[string][]*queue),
	}
}

// Name returns "InMemory", the name CAP's dashboard shows for it.
func (t *Transport) Name() string { return "InMemory" }

// Send copies msg into the queue of every group bound to its topic (the
// cap-msg-name header). A message no group is bound to is dropped.
func (t *Transport) Send(ctx context.Context, msg *message.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validate(msg); err != nil {
		return err
	}
	topic := msg.Name()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return fmt.Errorf("memory: send: %w", transport.ErrClosed)
	}
	qs := t.routeLocked(topic)
	t.mu.Unlock()
	if len(qs) == 0 {
		return nil
	}
	// One copy serves every queue: stored messages are never changed, and
	// each delivery gets a copy of its own.
	e := &entry{msg: msg.Clone(), topic: topic}
	for _, q := range qs {
		q.push(e)
	}
	return nil
}

// SendBatch sends msgs like Send, taking the broker's lock and each queue's
// lock once for the whole batch. Messages reach each queue in slice order.
func (t *Transport) SendBatch(ctx context.Context, msgs []*message.Message) []error {
	var errs []error
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(msgs))
		}
		errs[i] = err
	}
	failAll := func(err error) []error {
		for i := range msgs {
			fail(i, err)
		}
		return errs
	}
	if err := ctx.Err(); err != nil {
		return failAll(err)
	}
	routes := make([][]*queue, len(msgs))
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return failAll(fmt.Errorf("memory: send: %w", transport.ErrClosed))
	}
	for i, m := range msgs {
		if err := validate(m); err != nil {
			fail(i, err)
			continue
		}
		routes[i] = t.routeLocked(m.Name())
	}
	t.mu.Unlock()

	var (
		single *queue // the common case: every message goes to one queue
		batch  []*entry
		perQ   map[*queue][]*entry
	)
	for i, qs := range routes {
		if len(qs) == 0 {
			continue
		}
		e := &entry{msg: msgs[i].Clone(), topic: msgs[i].Name()}
		for _, q := range qs {
			switch {
			case perQ == nil && (single == nil || single == q):
				single = q
				batch = append(batch, e)
			default:
				if perQ == nil {
					perQ = map[*queue][]*entry{single: batch}
				}
				perQ[q] = append(perQ[q], e)
			}
		}
	}
	if perQ == nil {
		if single != nil {
			single.push(batch...)
		}
		return errs
	}
	for q, es := range perQ {
		q.push(es...)
	}
	return errs
}

func validate(msg *message.Message) error {
	if msg == nil {
		return errors.New("memory: send: nil message")
	}
	if msg.Name() == "" {
		return fmt.Errorf("memory: send: message %q has no %s header", msg.ID(), message.HeaderMessageName)
	}
	return nil
}

// routeLocked returns the queues bound to topic. t.mu is held.
func (t *Transport) routeLocked(topic string) []*queue {
	if qs, ok := t.routes[topic]; ok {
		return qs
	}
	var qs []*queue
	for _, q := range t.queues {
		if q.bound(topic) {
			qs = append(qs, q)
		}
	}
	if len(t.routes) >= maxRoutes {
		clear(t.routes)
	}
	t.routes[topic] = qs
	return qs
}

// Subscribe opens a consumer for group, creating the group's queue on first
// use and adding topics to its bindings. Messages sent after it returns
// reach the queue.
func (t *Transport) Subscribe(ctx context.Context, group string, topics []string) (transport.Consumer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if group == "" {
		return nil, errors.New("memory: subscribe: empty group name")
	}
	if len(topics) == 0 {
		return nil, fmt.Errorf("memory: subscribe %q: no topics", group)
	}
	for _, topic := range topics {
		if topic == "" {
			return nil, fmt.Errorf("memory: subscribe %q: empty topic", group)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("memory: subscribe %q: %w", group, transport.ErrClosed)
	}
	q := t.queues[group]
	if q == nil {
		q = &queue{bindings: make(map[string]struct{})}
		t.queues[group] = q
	}
	changed := false
	for _, topic := range topics {
		if _, ok := q.bindings[topic]; !ok {
			q.bindings[topic] = struct{}{}
			changed = true
		}
	}
	if changed {
		clear(t.routes)
	}
	return &consumer{t: t, q: q, done: make(chan struct{}), unacked: make(map[*delivery]struct{})}, nil
}

// Close drops every queue and its messages and unblocks every Receive,
// which then returns an error wrapping transport.ErrClosed. It is
// idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	close(t.done)
	t.queues = nil
	t.routes = nil
	return nil
}

func (t *Transport) isClosed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}
