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
	r1 := s.startCollect(t, want, c1)
	r2 := s.startCollect(t, want, c2)
	s.send(t, tr, msgs...)
	r1.finish(t)
	r2.finish(t)
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
	col := s.startCollect(t, want, c1, c2)
	s.sendBatch(t, tr, msgs)
	counts := col.finish(t)
	t.Logf("split between the two consumers: %d / %d", counts[0], counts[1])
	s.expectNone(t, c1, c2)
}
