package memory

import (
	"sync"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// entry is a message in a queue. msg is the broker's own copy and is never
// changed, so one entry may sit in several queues.
type entry struct {
	msg   *message.Message
	topic string
}

// queue holds one group's messages.
type queue struct {
	// bindings is guarded by Transport.mu.
	bindings map[string]struct{}

	mu    sync.Mutex
	ready deque
	// waiters are receivers blocked on an empty queue, oldest first. Each
	// channel has room for one wake-up and is removed from the list when
	// it is woken, so a push never blocks.
	waiters []chan struct{}
	seq     uint64 // numbers deliveries, to requeue them in order
}

// bound reports whether a binding of q matches topic. Transport.mu is held.
func (q *queue) bound(topic string) bool {
	if _, ok := q.bindings[topic]; ok {
		return true
	}
	for b := range q.bindings {
		if transport.Match(b, topic) {
			return true
		}
	}
	return false
}

// push appends es and wakes as many waiting receivers.
func (q *queue) push(es ...*entry) {
	q.mu.Lock()
	for _, e := range es {
		q.ready.pushBack(e)
	}
	q.wakeLocked(len(es))
	q.mu.Unlock()
}

// wakeLocked wakes up to n waiting receivers. q.mu is held.
func (q *queue) wakeLocked(n int) {
	for ; n > 0 && len(q.waiters) > 0; n-- {
		w := q.waiters[0]
		q.waiters[0] = nil
		q.waiters = q.waiters[1:]
		w <- struct{}{}
	}
	if len(q.waiters) == 0 {
		q.waiters = nil // let the backing array go
	}
}

// leaveLocked removes a receiver that stops waiting. If it was woken in the
// meantime, the wake-up passes to the next waiter so no message is left
// waiting while a receiver sleeps. q.mu is held.
func (q *queue) leaveLocked(w chan struct{}) {
	for i, x := range q.waiters {
		if x == w {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			return
		}
	}
	if q.ready.len() > 0 {
		q.wakeLocked(1)
	}
}

// deque is a ring buffer of entries.
type deque struct {
	buf  []*entry
	head int
	n    int
}

func (d *deque) len() int { return d.n }

func (d *deque) grow() {
	nb := make([]*entry, max(16, 2*len(d.buf)))
	for i := range d.n {
		nb[i] = d.buf[(d.head+i)%len(d.buf)]
	}
	d.buf, d.head = nb, 0
}

func (d *deque) pushBack(e *entry) {
	if d.n == len(d.buf) {
		d.grow()
	}
	d.buf[(d.head+d.n)%len(d.buf)] = e
	d.n++
}

func (d *deque) pushFront(e *entry) {
	if d.n == len(d.buf) {
		d.grow()
	}
	d.head = (d.head - 1 + len(d.buf)) % len(d.buf)
	d.buf[d.head] = e
	d.n++
}

func (d *deque) popFront() (*entry, bool) {
	if d.n == 0 {
		return nil, false
	}
	e := d.buf[d.head]
	d.buf[d.head] = nil
	d.head = (d.head + 1) % len(d.buf)
	d.n--
	if d.n == 0 && len(d.buf) > 1024 {
		// Release the memory of a burst once it has drained.
		d.buf, d.head = nil, 0
	}
	return e, true
}
