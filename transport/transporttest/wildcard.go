package transporttest

import (
	"testing"

	"github.com/go-cap/cap/message"
)

// testWildcards: a group subscribed with CAP's wildcards gets the topics
// that match and none of the others (transport.Match defines the
// semantics). '*' is exactly one word; '#' is one or more words, so "p.log"
// does not match "p.log.#" although RabbitMQ's own '#' (zero or more words)
// routes it: a transport whose broker is more generous filters with
// transport.Match.
//
// A control group subscribes to every topic by its exact name, which proves
// each one was sent and gives brokers that need a stream or topic per name
// (NATS, Kafka) somewhere to put it. All topics share one random first word.
func (s *suite) testWildcards(t *testing.T) {
	tr := s.transport(t)
	p := randomWord()
	patterns := []string{p + ".*.created", p + ".log.#"}
	matching := []string{
		p + ".order.created",
		p + ".Invoice7.created",
		p + ".log.a",
		p + ".log.a.b.c",
	}
	other := []string{
		p + ".created",
		p + ".a.b.created",
		p + ".order.created.x",
		p + ".order.updated",
		p + ".log",
		p + ".logs.a",
	}

	control := s.subscribe(t, tr, newGroup(), append(append([]string{}, matching...), other...)...)
	wild := s.subscribe(t, tr, newGroup(), patterns...)

	var msgs []*message.Message
	all := make(map[string]string)
	want := make(map[string]string)
	for i, topic := range append(append([]string{}, matching...), other...) {
		msg := newMessage(topic)
		msgs = append(msgs, msg)
		all[msg.ID()] = topic
		if i < len(matching) {
			want[msg.ID()] = topic
		}
	}

	cc := s.startCollect(t, all, control)
	wc := s.startCollect(t, want, wild)
	s.send(t, tr, msgs...)
	cc.finish(t)
	wc.finish(t)
	s.expectNone(t, wild, control)
}
