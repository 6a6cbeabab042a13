package transporttest

import (
	"testing"
)

// testFanOut: every group subscribed to a topic gets every message.
func (s *suite) testFanOut(t *testing.T) {
	tr := s.transport(t)
	topic := newTopic()
	c1 := s.subscribe(t, tr, newGroup(), topic)
	c2 := s.subscribe(t, tr, newGroup(), topic)

	msgs, want := newMessages(topic, 20)
	s.send(t, tr, msgs...)
	s.collect(t, want, c1)
	s.collect(t, want, c2)
	s.expectNone(t, c1, c2)
}

// testCompetingConsumers: two consumers of one group, receiving at the same
// time, together get every message exactly once. How the messages are split
// is the broker's business: one consumer may get them all.
func (s *suite) testCompetingConsumers(t *testing.T) {
	tr := s.transport(t)
	topic, group := newTopic(), newGroup()
	c1 := s.subscribe(t, tr, group, topic)
	c2 := s.subscribe(t, tr, group, topic)

	msgs, want := newMessages(topic, 200)
	s.sendBatch(t, tr, msgs)
	counts := s.collect(t, want, c1, c2)
	t.Logf("split between the two consumers: %d / %d", counts[0], counts[1])
	s.expectNone(t, c1, c2)
}
