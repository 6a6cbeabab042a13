package transporttest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// receiveAsync calls Receive in a goroutine and reports its error. The
// goroutine's own deadline is long, so only Close or cancel should end it.
func (s *suite) receiveAsync(ctx context.Context, c transport.Consumer) <-chan error {
	ctx, cancel := context.WithTimeout(ctx, 3*s.timeout)
	started := make(chan struct{})
	res := make(chan error, 1)
	go func() {
		defer cancel()
		close(started)
		d, err := c.Receive(ctx)
		if err == nil && d != nil {
			_ = d.Reject(context.Background())
		}
		res <- err
	}()
	// Receive may not be blocked yet when the caller proceeds; Close and
	// cancel must then make it return at once, which the tests accept too.
	<-started
	return res
}

// testReceiveContext: Receive returns ctx.Err() for a cancelled context and
// for one cancelled while it blocks, and the consumer still delivers the
// next message.
func (s *suite) testReceiveContext(t *testing.T) {
	tr := s.transport(t)
	topic := newTopic()
	c := s.subscribe(t, tr, newGroup(), topic)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Receive(ctx)
	require.ErrorIs(t, err, context.Canceled, "Receive with a cancelled context")

	ctx, cancel = context.WithCancel(context.Background())
	res := s.receiveAsync(ctx, c)
	cancel()
	require.ErrorIs(t, s.waitErr(t, res, "Receive after its context was cancelled"), context.Canceled,
		"Receive cancelled while blocked")

	s.expectNone(t, c) // a deadline gives context.DeadlineExceeded

	msg := newMessage(topic)
	s.send(t, tr, msg)
	d := s.receive(t, c)
	require.Equal(t, msg.ID(), d.Message().ID(), "the consumer must still work after cancelled receives")
	s.ack(t, d)
}

// testReceiveWaits: a Receive blocked on an empty group returns the
// message sent while it waits.
func (s *suite) testReceiveWaits(t *testing.T) {
	tr := s.transport(t)
	topic := newTopic()
	c := s.subscribe(t, tr, newGroup(), topic)

	type result struct {
		d   transport.Delivery
		err error
	}
	res := make(chan result, 1)
	started := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		defer cancel()
		close(started)
		d, err := c.Receive(ctx)
		res <- result{d, err}
	}()
	<-started
	msg := newMessage(topic)
	s.send(t, tr, msg)
	r := <-res // the receiver's own deadline bounds the wait
	require.NoError(t, r.err, "Receive waiting while the message was sent")
	require.Equal(t, msg.ID(), r.d.Message().ID())
	s.ack(t, r.d)
}

// testConsumerClose: closing a consumer unblocks its Receive with ErrClosed,
// is idempotent, and leaves the transport usable.
func (s *suite) testConsumerClose(t *testing.T) {
	tr := s.transport(t)
	topic := newTopic()
	c := s.subscribe(t, tr, newGroup(), topic)

	res := s.receiveAsync(context.Background(), c)
	require.NoError(t, c.Close(), "Consumer.Close")
	require.ErrorIs(t, s.waitErr(t, res, "Receive blocked during Consumer.Close"), transport.ErrClosed,
		"Receive blocked during Consumer.Close")
	require.NoError(t, c.Close(), "second Consumer.Close")

	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	_, err := c.Receive(ctx)
	require.ErrorIs(t, err, transport.ErrClosed, "Receive on a closed consumer")

	// The transport keeps working for other consumers.
	c2 := s.subscribe(t, tr, newGroup(), topic)
	msg := newMessage(topic)
	s.send(t, tr, msg)
	d := s.receive(t, c2)
	require.Equal(t, msg.ID(), d.Message().ID())
	s.ack(t, d)
}

// testTransportClose: closing the transport unblocks its consumers' Receive
// with ErrClosed, is idempotent, and makes Send, SendBatch and Subscribe
// fail.
func (s *suite) testTransportClose(t *testing.T) {
	tr := s.transport(t)
	topic := newTopic()
	c := s.subscribe(t, tr, newGroup(), topic)

	res := s.receiveAsync(context.Background(), c)
	require.NoError(t, tr.Close(), "Transport.Close")
	require.ErrorIs(t, s.waitErr(t, res, "Receive blocked during Transport.Close"), transport.ErrClosed,
		"Receive blocked during Transport.Close")
	require.NoError(t, tr.Close(), "second Transport.Close")

	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	_, err := c.Receive(ctx)
	require.ErrorIs(t, err, transport.ErrClosed, "Receive after Transport.Close")

	require.Error(t, tr.Send(ctx, newMessage(topic)), "Send after Transport.Close")
	errs := tr.SendBatch(ctx, []*message.Message{newMessage(topic), newMessage(topic)})
	require.Len(t, errs, 2, "SendBatch after Transport.Close must report an error per message")
	for i, err := range errs {
		require.Error(t, err, "SendBatch message %d after Transport.Close", i)
	}
	_, err = tr.Subscribe(ctx, newGroup(), []string{topic})
	require.Error(t, err, "Subscribe after Transport.Close")

	// Closing the consumer of a closed transport must not hang; its error,
	// if any, is the transport's choice.
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	s.waitErr(t, closed, "Consumer.Close after Transport.Close")
}
