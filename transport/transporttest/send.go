package transporttest

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
)

// testSendReceive: every CAP header, non-ASCII values and a binary body
// arrive intact, Topic() is the topic, and Send leaves the caller's message
// as it was.
func (s *suite) testSendReceive(t *testing.T) {
	tr := s.transport(t)
	topic := newTopic()
	c := s.subscribe(t, tr, newGroup(), topic)

	msg := fullMessage(topic)
	sent := msg.Clone()
	s.send(t, tr, msg)
	require.Equal(t, sent, msg, "Send changed the caller's message")

	d := s.receive(t, c)
	requireSameMessage(t, sent, d.Message())
	require.Equal(t, topic, d.Topic(), "Delivery.Topic()")
	s.ack(t, d)
}

// testEmptyBody: an empty body (CAP's null value) arrives as an empty body.
func (s *suite) testEmptyBody(t *testing.T) {
	tr := s.transport(t)
	topic := newTopic()
	c := s.subscribe(t, tr, newGroup(), topic)

	msg := newMessage(topic)
	msg.Body = []byte{}
	s.send(t, tr, msg)

	d := s.receive(t, c)
	requireSameMessage(t, msg, d.Message())
	s.ack(t, d)
}

// testSendBatch: SendBatch of 100 messages reports success for each and
// delivers all of them.
func (s *suite) testSendBatch(t *testing.T) {
	tr := s.transport(t)
	topic := newTopic()
	c := s.subscribe(t, tr, newGroup(), topic)

	msgs, want := newMessages(topic, 100)
	col := s.startCollect(t, want, c)
	s.sendBatch(t, tr, msgs)
	col.finish(t)
	s.expectNone(t, c)
}

// testMultipleTopics: one consumer subscribed to topics whose first words
// differ (different streams on NATS, different topics on Kafka) gets the
// messages of each, with the right Topic().
func (s *suite) testMultipleTopics(t *testing.T) {
	tr := s.transport(t)
	t1, t2 := newTopic(), newTopic()
	c := s.subscribe(t, tr, newGroup(), t1, t2)

	m1, want := newMessages(t1, 5)
	m2, want2 := newMessages(t2, 5)
	for id, topic := range want2 {
		want[id] = topic
	}
	col := s.startCollect(t, want, c)
	s.send(t, tr, append(m1, m2...)...)
	col.finish(t)
}

// testConcurrentSend: Send from 8 goroutines at once is safe and loses
// nothing.
func (s *suite) testConcurrentSend(t *testing.T) {
	const senders, each = 8, 50
	tr := s.transport(t)
	topic := newTopic()
	c := s.subscribe(t, tr, newGroup(), topic)

	msgs, want := newMessages(topic, senders*each)
	col := s.startCollect(t, want, c)
	errs := make(chan error, senders)
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func(part []*message.Message) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
			defer cancel()
			for _, m := range part {
				if err := tr.Send(ctx, m); err != nil {
					errs <- fmt.Errorf("sender %d: Send %s: %w", g, m.ID(), err)
					return
				}
			}
		}(msgs[g*each : (g+1)*each])
	}
	s.wait(t, &wg, "concurrent senders")
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	col.finish(t)
	s.expectNone(t, c)
}
