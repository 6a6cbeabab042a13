package memory_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/memory"
	"github.com/go-cap/cap/transport/transporttest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	transporttest.Run(t, transporttest.Harness{
		New:     func(*testing.T) transport.Transport { return memory.New() },
		Caps:    transporttest.Capabilities{Wildcards: true, Redelivery: true, Durable: true},
		Timeout: 5 * time.Second,
	})
}

// quiet is how long the tests below wait to be sure nothing arrives.
const quiet = 100 * time.Millisecond

func msg(topic, id string) *message.Message {
	return &message.Message{
		Headers: message.Headers{message.HeaderMessageID: id, message.HeaderMessageName: topic},
		Body:    []byte(`"` + id + `"`),
	}
}

func subscribe(t *testing.T, tr *memory.Transport, group string, topics ...string) transport.Consumer {
	t.Helper()
	c, err := tr.Subscribe(context.Background(), group, topics)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func receive(t *testing.T, c transport.Consumer) transport.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := c.Receive(ctx)
	require.NoError(t, err)
	return d
}

func requireNone(t *testing.T, c transport.Consumer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), quiet)
	defer cancel()
	d, err := c.Receive(ctx)
	if err == nil {
		t.Fatalf("unexpected message %s on %q", d.Message().ID(), d.Topic())
	}
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func newTransport(t *testing.T) *memory.Transport {
	tr := memory.New()
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func TestName(t *testing.T) {
	t.Parallel()
	require.Equal(t, "InMemory", memory.New().Name())
}

func TestSendCopiesMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr := newTransport(t)
	a := subscribe(t, tr, "a", "order.created")
	b := subscribe(t, tr, "b", "order.created")

	m := msg("order.created", "1")
	require.NoError(t, tr.Send(ctx, m))
	// The sender reuses its message: the queued one must not change.
	m.Headers["x"] = "changed"
	m.Body[1] = 'X'

	d := receive(t, a)
	require.Equal(t, `"1"`, string(d.Message().Body))
	require.NotContains(t, d.Message().Headers, "x")

	// A receiver changes its copy and rejects: the redelivery and the other
	// group see the original.
	d.Message().Headers[message.HeaderGroup] = "a"
	d.Message().Body[1] = 'Y'
	require.NoError(t, d.Reject(ctx))
	d = receive(t, a)
	require.Equal(t, `"1"`, string(d.Message().Body))
	require.NotContains(t, d.Message().Headers, message.HeaderGroup)
	require.NoError(t, d.Ack(ctx))

	d = receive(t, b)
	require.Equal(t, `"1"`, string(d.Message().Body))
	require.NotContains(t, d.Message().Headers, message.HeaderGroup)
	require.NoError(t, d.Ack(ctx))
}

func TestSendBatchCopiesMessages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr := newTransport(t)
	c := subscribe(t, tr, "g", "t")

	ms := []*message.Message{msg("t", "1"), msg("t", "2")}
	require.Nil(t, tr.SendBatch(ctx, ms))
	ms[0].Body[1], ms[1].Body[1] = 'X', 'X'
	for _, want := range []string{`"1"`, `"2"`} {
		d := receive(t, c)
		require.Equal(t, want, string(d.Message().Body))
		require.NoError(t, d.Ack(ctx))
	}
}

func TestDropBeforeBind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr := newTransport(t)
	require.NoError(t, tr.Send(ctx, msg("early", "1")), "a message no group is bound to is dropped, not refused")
	require.Nil(t, tr.SendBatch(ctx, []*message.Message{msg("early", "2")}))

	c := subscribe(t, tr, "g", "early")
	requireNone(t, c)

	require.NoError(t, tr.Send(ctx, msg("early", "3")))
	d := receive(t, c)
	require.Equal(t, "3", d.Message().ID())
	require.NoError(t, d.Ack(ctx))
}

func TestSettleTwice(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr := newTransport(t)
	c := subscribe(t, tr, "g", "t")

	require.NoError(t, tr.Send(ctx, msg("t", "1")))
	d := receive(t, c)
	require.NoError(t, d.Ack(ctx))
	require.ErrorIs(t, d.Ack(ctx), memory.ErrSettled)
	require.ErrorIs(t, d.Reject(ctx), memory.ErrSettled, "a Reject after Ack must not requeue")
	requireNone(t, c)

	require.NoError(t, tr.Send(ctx, msg("t", "2")))
	d = receive(t, c)
	require.NoError(t, d.Reject(ctx))
	require.ErrorIs(t, d.Reject(ctx), memory.ErrSettled, "a second Reject must not queue the message twice")
	require.ErrorIs(t, d.Ack(ctx), memory.ErrSettled)
	d = receive(t, c)
	require.Equal(t, "2", d.Message().ID())
	require.NoError(t, d.Ack(ctx))
	requireNone(t, c)
}

func TestRejectGoesToFront(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr := newTransport(t)
	c := subscribe(t, tr, "g", "t")

	require.Nil(t, tr.SendBatch(ctx, []*message.Message{msg("t", "1"), msg("t", "2"), msg("t", "3")}))
	d := receive(t, c)
	require.Equal(t, "1", d.Message().ID())
	require.NoError(t, d.Reject(ctx))
	for _, want := range []string{"1", "2", "3"} {
		d := receive(t, c)
		require.Equal(t, want, d.Message().ID())
		require.NoError(t, d.Ack(ctx))
	}
}

func TestCloseReturnsUnackedInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr := newTransport(t)
	c1 := subscribe(t, tr, "g", "t")

	var ms []*message.Message
	for i := range 5 {
		ms = append(ms, msg("t", strconv.Itoa(i)))
	}
	require.Nil(t, tr.SendBatch(ctx, ms))
	d0, d1, d2 := receive(t, c1), receive(t, c1), receive(t, c1)
	require.NoError(t, d1.Ack(ctx))
	require.NoError(t, c1.Close())
	require.ErrorIs(t, d0.Ack(ctx), transport.ErrClosed, "a returned delivery cannot be acked")
	require.ErrorIs(t, d2.Reject(ctx), transport.ErrClosed)

	c2 := subscribe(t, tr, "g", "t")
	for _, want := range []string{"0", "2", "3", "4"} {
		d := receive(t, c2)
		require.Equal(t, want, d.Message().ID())
		require.NoError(t, d.Ack(ctx))
	}
	requireNone(t, c2)
}

func TestBindingsAreUnionOfConsumers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr := newTransport(t)
	c1 := subscribe(t, tr, "g", "a")
	c2 := subscribe(t, tr, "g", "b")
	require.NoError(t, c2.Close())

	// The group's queue keeps the binding c2 added: c1 gets "b" too.
	require.NoError(t, tr.Send(ctx, msg("b", "1")))
	d := receive(t, c1)
	require.Equal(t, "b", d.Topic())
	require.NoError(t, d.Ack(ctx))
}

func TestExactTopicIsCaseInsensitive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr := newTransport(t)
	c := subscribe(t, tr, "g", "order.created")
	require.NoError(t, tr.Send(ctx, msg("Order.Created", "1")))
	d := receive(t, c)
	require.Equal(t, "Order.Created", d.Topic())
	require.NoError(t, d.Ack(ctx))
}

func TestTransportsAreIndependent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := newTransport(t), newTransport(t)
	c := subscribe(t, a, "g", "t")
	require.NoError(t, b.Send(ctx, msg("t", "1")))
	requireNone(t, c)
}

func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr := newTransport(t)
	_, err := tr.Subscribe(ctx, "", []string{"t"})
	require.Error(t, err, "empty group")
	_, err = tr.Subscribe(ctx, "g", nil)
	require.Error(t, err, "no topics")
	_, err = tr.Subscribe(ctx, "g", []string{""})
	require.Error(t, err, "empty topic")

	require.Error(t, tr.Send(ctx, nil))
	require.Error(t, tr.Send(ctx, &message.Message{Headers: message.Headers{}}), "no cap-msg-name")
	errs := tr.SendBatch(ctx, []*message.Message{msg("t", "1"), {Headers: message.Headers{}}})
	require.Len(t, errs, 2)
	require.NoError(t, errs[0])
	require.Error(t, errs[1])

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, tr.Send(cancelled, msg("t", "1")), context.Canceled)
}

func TestAckAfterTransportClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tr := memory.New()
	c := subscribe(t, tr, "g", "t")
	require.NoError(t, tr.Send(ctx, msg("t", "1")))
	d := receive(t, c)
	require.NoError(t, tr.Close())
	require.ErrorIs(t, d.Ack(ctx), transport.ErrClosed)
}

// TestManyWaiters checks that every blocked receiver is woken by a message
// and none sleeps through one: 8 receivers block on an empty queue, then a
// batch of 8 arrives.
func TestManyWaiters(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tr := newTransport(t)
	const n = 8
	got := make(chan string, n)
	errs := make(chan error, n)
	for range n {
		c := subscribe(t, tr, "g", "t")
		go func() {
			d, err := c.Receive(ctx)
			if err != nil {
				errs <- err
				return
			}
			got <- d.Message().ID()
			errs <- d.Ack(ctx)
		}()
	}
	var ms []*message.Message
	for i := range n {
		ms = append(ms, msg("t", strconv.Itoa(i)))
	}
	require.Nil(t, tr.SendBatch(ctx, ms))
	seen := map[string]bool{}
	for range n {
		require.NoError(t, <-errs)
		seen[<-got] = true
	}
	require.Len(t, seen, n)
}
