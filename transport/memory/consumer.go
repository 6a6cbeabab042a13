package memory

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// consumer is one receiver of a group's queue.
type consumer struct {
	t    *Transport
	q    *queue
	done chan struct{} // closed by Close

	// Guarded by q.mu.
	closed  bool
	unacked map[*delivery]struct{}
}

// Receive returns the next message of the group's queue, waiting for one
// if it is empty.
func (c *consumer) Receive(ctx context.Context) (transport.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q := c.q
	q.mu.Lock()
	for {
		if c.closed || c.t.isClosed() {
			q.mu.Unlock()
			return nil, fmt.Errorf("memory: receive: %w", transport.ErrClosed)
		}
		if e, ok := q.ready.popFront(); ok {
			q.seq++
			d := &delivery{c: c, e: e, seq: q.seq}
			c.unacked[d] = struct{}{}
			q.mu.Unlock()
			d.msg = e.msg.Clone()
			return d, nil
		}
		w := make(chan struct{}, 1)
		q.waiters = append(q.waiters, w)
		q.mu.Unlock()

		var err error
		select {
		case <-w:
		case <-ctx.Done():
			err = ctx.Err()
		case <-c.done:
			err = fmt.Errorf("memory: receive: %w", transport.ErrClosed)
		case <-c.t.done:
			err = fmt.Errorf("memory: receive: %w", transport.ErrClosed)
		}
		q.mu.Lock()
		if err != nil {
			q.leaveLocked(w)
			q.mu.Unlock()
			return nil, err
		}
	}
}

// Close puts the consumer's unacknowledged messages back at the front of
// the queue, in delivery order, and unblocks its Receive calls. The queue
// keeps its bindings and messages for the group's next consumer.
func (c *consumer) Close() error {
	q := c.q
	q.mu.Lock()
	defer q.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	close(c.done)
	ds := make([]*delivery, 0, len(c.unacked))
	for d := range c.unacked {
		ds = append(ds, d)
	}
	c.unacked = nil
	slices.SortFunc(ds, func(a, b *delivery) int { return cmp.Compare(b.seq, a.seq) })
	for _, d := range ds { // latest first, so the earliest ends up in front
		d.state = returned
		q.ready.pushFront(d.e)
	}
	q.wakeLocked(len(ds))
	return nil
}

type deliveryState uint8

const (
	pending deliveryState = iota
	acked
	rejected
	returned // put back in the queue when its consumer closed
)

// delivery is one message handed to a consumer.
type delivery struct {
	c   *consumer
	e   *entry
	msg *message.Message // the receiver's own copy
	seq uint64

	state deliveryState // guarded by c.q.mu
}

// Message returns the receiver's copy of the message; changing it does not
// change what a redelivery or another group gets.
func (d *delivery) Message() *message.Message { return d.msg }

// Topic returns the topic the message was sent to.
func (d *delivery) Topic() string { return d.e.topic }

// Ack removes the message from the queue. It fails with ErrSettled if the
// delivery was already acknowledged or rejected, and with an error wrapping
// transport.ErrClosed once its consumer or the transport closed.
func (d *delivery) Ack(ctx context.Context) error { return d.settle(ctx, false) }

// Reject puts the message back at the front of the queue, to be delivered
// next. It fails like Ack.
func (d *delivery) Reject(ctx context.Context) error { return d.settle(ctx, true) }

func (d *delivery) settle(ctx context.Context, requeue bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q := d.c.q
	q.mu.Lock()
	defer q.mu.Unlock()
	switch d.state {
	case acked, rejected:
		return fmt.Errorf("memory: message %q: %w", d.msg.ID(), ErrSettled)
	case returned:
		return fmt.Errorf("memory: message %q went back to the queue when its consumer closed: %w",
			d.msg.ID(), transport.ErrClosed)
	}
	if d.c.t.isClosed() {
		return fmt.Errorf("memory: message %q: %w", d.msg.ID(), transport.ErrClosed)
	}
	delete(d.c.unacked, d)
	if !requeue {
		d.state = acked
		return nil
	}
	d.state = rejected
	q.ready.pushFront(d.e)
	q.wakeLocked(1)
	return nil
}
