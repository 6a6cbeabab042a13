package rabbitmq

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

const waitLong = 10 * time.Second

func TestName(t *testing.T) {
	t.Parallel()
	tr, err := New(Config{})
	require.NoError(t, err)
	defer tr.Close()
	require.Equal(t, "RabbitMQ", tr.Name())
	require.Equal(t, "cap.default.router", tr.Exchange())
}

func TestSendBatchAndReceive(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{})
	topic := uniqueName("test.batch.")
	c, _ := subscribe(t, tr, topic)

	const n = 50
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = newMessage(topic, fmt.Sprintf(`{"n":%d}`, i))
		msgs[i].Headers["x-custom"] = "v"
	}
	require.Nil(t, tr.SendBatch(context.Background(), msgs))

	want := make(map[string]*message.Message, n)
	for _, m := range msgs {
		want[m.ID()] = m
	}
	for range n {
		d := receive(t, c, waitLong)
		require.Equal(t, topic, d.Topic())
		m, ok := want[d.Message().ID()]
		require.True(t, ok, "unknown or duplicate message %v", d.Message().Headers)
		delete(want, d.Message().ID())
		require.Equal(t, m.Headers, d.Message().Headers)
		require.Equal(t, m.Body, d.Message().Body)
		require.NoError(t, d.Ack(context.Background()))
	}
	require.Empty(t, want)
}

// Several senders at once share the channel pool; each message is confirmed
// on its own.
func TestConcurrentSenders(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{PublishChannels: 3})
	topic := uniqueName("test.concurrent.")
	c, _ := subscribe(t, tr, topic)

	const senders, each = 8, 25
	errc := make(chan error, senders)
	for s := range senders {
		go func() {
			for i := range each {
				if err := tr.Send(context.Background(), newMessage(topic, fmt.Sprintf(`"%d-%d"`, s, i))); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range senders {
		require.NoError(t, <-errc)
	}
	seen := map[string]bool{}
	for range senders * each {
		d := receive(t, c, waitLong)
		require.False(t, seen[d.Message().ID()])
		seen[d.Message().ID()] = true
		require.NoError(t, d.Ack(context.Background()))
	}
}

func TestWildcards(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{})
	root := uniqueName("w")
	c, _ := subscribe(t, tr, root+".*.created", root+".audit.#")

	send := func(topic string) {
		t.Helper()
		require.NoError(t, tr.Send(context.Background(), newMessage(topic, `{}`)))
	}
	// Each send returns once the broker has routed the message, so a queue
	// receives in send order: the matching marker arriving next proves that
	// the message before it was not routed to the group.
	for _, tc := range []struct {
		topic string
		match bool
	}{
		{root + ".order.created", true},
		{root + ".order.item.created", false},
		{root + ".audit.x", true},
		{root + ".audit.x.y.z", true},
		{root + ".audit", false}, // RabbitMQ's # routes it; CAP's needs a word
		{root + ".or-der.created", false},
		{root + ".order.deleted", false},
		{"other." + root + ".order.created", false},
	} {
		send(tc.topic)
		marker := root + ".marker.created"
		send(marker)
		d := receive(t, c, waitLong)
		if tc.match {
			require.Equal(t, tc.topic, d.Topic())
			require.NoError(t, d.Ack(context.Background()))
			d = receive(t, c, waitLong)
		}
		require.Equal(t, marker, d.Topic(), "after %s", tc.topic)
		require.NoError(t, d.Ack(context.Background()))
	}
}

// Every group gets every message; the consumers of one group compete.
func TestGroups(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{})
	topic := uniqueName("test.groups.")
	a, _ := subscribe(t, tr, topic)
	b, groupB := subscribe(t, tr, topic)
	b2, err := tr.Subscribe(context.Background(), groupB, []string{topic})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b2.Close() })

	const n = 20
	for i := range n {
		require.NoError(t, tr.Send(context.Background(), newMessage(topic, fmt.Sprint(i))))
	}
	for range n {
		require.NoError(t, receive(t, a, waitLong).Ack(context.Background()))
	}
	// Group b's messages are shared between its two consumers.
	got := make(chan string, n)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	for _, c := range []transport.Consumer{b, b2} {
		go func() {
			for {
				d, err := c.Receive(ctx)
				if err != nil {
					return
				}
				_ = d.Ack(ctx)
				got <- d.Message().ID()
			}
		}()
	}
	seen := map[string]bool{}
	for range n {
		select {
		case id := <-got:
			require.False(t, seen[id])
			seen[id] = true
		case <-ctx.Done():
			t.Fatalf("group b received %d of %d", len(seen), n)
		}
	}
}

func TestRejectRedelivers(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{})
	topic := uniqueName("test.reject.")
	c, _ := subscribe(t, tr, topic)

	m := newMessage(topic, `"again"`)
	require.NoError(t, tr.Send(context.Background(), m))
	d := receive(t, c, waitLong)
	require.False(t, d.(*Delivery).Raw().Redelivered)
	require.NoError(t, d.Reject(context.Background()))
	require.ErrorIs(t, d.Ack(context.Background()), errSettled)

	d = receive(t, c, waitLong)
	require.Equal(t, m.ID(), d.Message().ID())
	require.True(t, d.(*Delivery).Raw().Redelivered)
	require.NoError(t, d.Ack(context.Background()))
	require.ErrorIs(t, d.Ack(context.Background()), errSettled)
}

// Closing a consumer returns its unacknowledged deliveries; the queue keeps
// the messages sent while no consumer is open.
func TestDurableGroup(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{})
	topic := uniqueName("test.durable.")
	c, group := subscribe(t, tr, topic)

	first := newMessage(topic, `1`)
	require.NoError(t, tr.Send(context.Background(), first))
	d := receive(t, c, waitLong)
	require.Equal(t, first.ID(), d.Message().ID())
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close is idempotent")
	_, err := c.Receive(context.Background())
	require.ErrorIs(t, err, transport.ErrClosed)
	require.ErrorIs(t, d.Ack(context.Background()), transport.ErrUnavailable)

	second := newMessage(topic, `2`)
	require.NoError(t, tr.Send(context.Background(), second))

	c2, err := tr.Subscribe(context.Background(), group, []string{topic})
	require.NoError(t, err)
	defer c2.Close()
	got := map[string]bool{}
	for range 2 {
		d := receive(t, c2, waitLong)
		got[d.Message().ID()] = true
		require.NoError(t, d.Ack(context.Background()))
	}
	require.Equal(t, map[string]bool{first.ID(): true, second.ID(): true}, got)
}

func TestSendBatchReportsEachMessage(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{})
	topic := uniqueName("test.each.")
	c, _ := subscribe(t, tr, topic)

	noName := newMessage(topic, `2`)
	delete(noName.Headers, message.HeaderMessageName)
	msgs := []*message.Message{newMessage(topic, `1`), noName, newMessage(topic, `3`)}
	errs := tr.SendBatch(context.Background(), msgs)
	require.Len(t, errs, 3)
	require.NoError(t, errs[0])
	require.ErrorIs(t, errs[1], ErrNoTopic)
	require.NoError(t, errs[2])
	for _, want := range []string{msgs[0].ID(), msgs[2].ID()} {
		d := receive(t, c, waitLong)
		require.Equal(t, want, d.Message().ID())
		require.NoError(t, d.Ack(context.Background()))
	}
}

// A queue that refuses publishes once full makes the broker nack them: the
// batch reports the nacked messages and only them.
func TestNackedMessagesFail(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{QueueArgs: amqp.Table{"x-max-length": int32(2), "x-overflow": "reject-publish"}})
	topic := uniqueName("test.nack.")
	c, _ := subscribe(t, tr, topic)
	require.NoError(t, c.Close()) // the queue stays, with nobody draining it

	msgs := make([]*message.Message, 5)
	for i := range msgs {
		msgs[i] = newMessage(topic, fmt.Sprint(i))
	}
	errs := tr.SendBatch(context.Background(), msgs)
	require.Len(t, errs, 5)
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	for _, err := range errs[2:] {
		require.ErrorIs(t, err, ErrNacked)
	}
	// The pool's channel survives a nack.
	require.ErrorIs(t, tr.Send(context.Background(), newMessage(topic, `x`)), ErrNacked)
}

// PublishBatch publishes batches one after the other before their confirms
// are awaited, on one pool channel; each wait reports its own batch, nacks
// included.
func TestPublishBatchPipelined(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{PublishChannels: 1,
		QueueArgs: amqp.Table{"x-max-length": int32(7), "x-overflow": "reject-publish"}})
	topic := uniqueName("test.pipeline.")
	c, _ := subscribe(t, tr, topic)
	require.NoError(t, c.Close()) // nobody drains the queue: the eighth message on is nacked

	ctx := context.Background()
	var waits []func() []error
	for b := range 3 {
		msgs := make([]*message.Message, 4)
		for i := range msgs {
			msgs[i] = newMessage(topic, fmt.Sprint(b*4+i))
		}
		waits = append(waits, tr.PublishBatch(ctx, msgs))
	}
	require.Nil(t, waits[0](), "first batch: all confirmed")
	errs := waits[1]()
	require.Len(t, errs, 4)
	for i, err := range errs {
		if i < 3 {
			require.NoError(t, err, "message %d of the second batch", i)
		} else {
			require.ErrorIs(t, err, ErrNacked, "message %d of the second batch", i)
		}
	}
	errs = waits[2]()
	require.Len(t, errs, 4)
	for _, err := range errs {
		require.ErrorIs(t, err, ErrNacked)
	}
}

func TestUnroutable(t *testing.T) {
	t.Parallel()
	nobody := uniqueName("test.nobody.")

	// CAP's behaviour: the broker drops the message and the send succeeds.
	tr := newTransport(t, Config{})
	require.NoError(t, tr.Send(context.Background(), newMessage(nobody, `1`)))

	mand := newTransport(t, Config{Mandatory: true})
	topic := uniqueName("test.routed.")
	c, _ := subscribe(t, mand, topic)
	msgs := []*message.Message{newMessage(nobody, `1`), newMessage(topic, `2`), newMessage(nobody, `3`), newMessage(topic, `4`)}
	errs := mand.SendBatch(context.Background(), msgs)
	require.Len(t, errs, 4)
	require.ErrorIs(t, errs[0], ErrUnroutable)
	require.NoError(t, errs[1])
	require.ErrorIs(t, errs[2], ErrUnroutable)
	require.NoError(t, errs[3])
	for _, want := range []string{msgs[1].ID(), msgs[3].ID()} {
		d := receive(t, c, waitLong)
		require.Equal(t, want, d.Message().ID())
		require.NoError(t, d.Ack(context.Background()))
	}
}

func TestQuorumQueue(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{QueueType: "quorum"})
	topic := uniqueName("test.quorum.")
	c, group := subscribe(t, tr, topic)

	q, err := adminChannel(t).QueueDeclarePassive(group, true, false, false, false, nil)
	require.NoError(t, err)
	require.Equal(t, group, q.Name)

	m := newMessage(topic, `"q"`)
	require.NoError(t, tr.Send(context.Background(), m))
	d := receive(t, c, waitLong)
	require.Equal(t, m.ID(), d.Message().ID())
	require.NoError(t, d.Reject(context.Background()))
	d = receive(t, c, waitLong)
	require.Equal(t, m.ID(), d.Message().ID())
	require.NoError(t, d.Ack(context.Background()))
}

// A queue declared by another service with other arguments makes Subscribe
// fail with the broker's reason, not with ErrUnavailable.
func TestQueueArgumentMismatch(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{})
	group := uniqueName("cap.test.group.")
	deleteQueueAtCleanup(t, group)
	_, err := adminChannel(t).QueueDeclare(group, true, false, false, false, amqp.Table{"x-message-ttl": int32(1000)})
	require.NoError(t, err)

	_, err = tr.Subscribe(context.Background(), group, []string{"a"})
	require.Error(t, err)
	require.NotErrorIs(t, err, transport.ErrUnavailable)
	require.Contains(t, err.Error(), "PRECONDITION_FAILED")
}

func TestVersionedExchange(t *testing.T) {
	t.Parallel()
	name := uniqueName("cap.test.router.")
	deleteExchangeAtCleanup(t, name+".v2")
	tr := newTransport(t, Config{ExchangeName: name, Version: "v2"})
	require.Equal(t, name+".v2", tr.Exchange())
	topic := uniqueName("test.version.")
	c, _ := subscribe(t, tr, topic)

	require.NoError(t, adminChannel(t).ExchangeDeclarePassive(name+".v2", "topic", true, false, false, false, nil))
	m := newMessage(topic, `{}`)
	require.NoError(t, tr.Send(context.Background(), m))
	d := receive(t, c, waitLong)
	require.Equal(t, m.ID(), d.Message().ID())
	require.NoError(t, d.Ack(context.Background()))
}

// The first address is dead; the transport goes on to the next one.
func TestSeveralURLs(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{URL: "amqp://guest:guest@127.0.0.1:1/", URLs: []string{brokerURL(t)}, DialTimeout: time.Second})
	topic := uniqueName("test.urls.")
	c, _ := subscribe(t, tr, topic)
	require.NoError(t, tr.Send(context.Background(), newMessage(topic, `1`)))
	require.NoError(t, receive(t, c, waitLong).Ack(context.Background()))
}

func TestCloseUnblocksReceivers(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{})
	c, group := subscribe(t, tr, uniqueName("test.close."))

	errc := make(chan error, 1)
	go func() {
		_, err := c.Receive(context.Background())
		errc <- err
	}()
	require.NoError(t, tr.Close())
	select {
	case err := <-errc:
		require.ErrorIs(t, err, transport.ErrClosed)
	case <-time.After(waitLong):
		t.Fatal("Receive still blocked after Close")
	}
	require.NoError(t, tr.Close(), "Close is idempotent")
	require.ErrorIs(t, tr.Send(context.Background(), newMessage("a", `1`)), transport.ErrClosed)
	_, err := tr.Subscribe(context.Background(), group, []string{"a"})
	require.ErrorIs(t, err, transport.ErrClosed)
}

func TestReceiveHonoursContext(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{})
	c, _ := subscribe(t, tr, uniqueName("test.ctx."))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Receive(ctx)
	require.ErrorIs(t, err, context.Canceled)
}
