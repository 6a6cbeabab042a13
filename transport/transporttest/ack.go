package transporttest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// testAckIsFinal: an acknowledged message is not delivered again.
func (s *suite) testAckIsFinal(t *testing.T) {
	tr := s.transport(t)
	topic := newTopic()
	c := s.subscribe(t, tr, newGroup(), topic)

	msg := newMessage(topic)
	s.send(t, tr, msg)
	d := s.receive(t, c)
	require.Equal(t, msg.ID(), d.Message().ID())
	s.ack(t, d)
	s.expectNone(t, c)
}

// testRejectRedelivers: a rejected message comes back to the group intact,
// again after a second reject, and no more once acknowledged.
func (s *suite) testRejectRedelivers(t *testing.T) {
	tr := s.transport(t)
	topic := newTopic()
	c := s.subscribe(t, tr, newGroup(), topic)

	msg := fullMessage(topic)
	s.send(t, tr, msg)
	for i := range 3 {
		d := s.receive(t, c)
		require.Equal(t, msg.ID(), d.Message().ID(), "delivery %d", i+1)
		requireSameMessage(t, msg, d.Message())
		require.Equal(t, topic, d.Topic(), "Delivery.Topic() of delivery %d", i+1)
		if i < 2 {
			s.reject(t, d)
		} else {
			s.ack(t, d)
		}
	}
	s.expectNone(t, c)
}

// testConsumerResumes: a group whose only consumer closed keeps the message
// that consumer left unacknowledged and the messages sent while no consumer
// was open, and delivers them all to the group's next consumer.
func (s *suite) testConsumerResumes(t *testing.T) {
	tr := s.transport(t)
	topic, group := newTopic(), newGroup()
	c1 := s.subscribe(t, tr, group, topic)

	first := newMessage(topic)
	s.send(t, tr, first)
	d := s.receive(t, c1)
	require.Equal(t, first.ID(), d.Message().ID())
	require.NoError(t, c1.Close(), "Close with an unacknowledged delivery")

	later, want := newMessages(topic, 5)
	s.send(t, tr, later...)
	want[first.ID()] = topic

	c2 := s.subscribe(t, tr, group, topic)
	s.collect(t, want, c2)
	s.expectNone(t, c2)
}
