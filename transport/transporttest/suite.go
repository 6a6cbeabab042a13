// Package transporttest is the conformance suite every transport passes.
//
// A transport's tests call Run with a Harness that connects to the broker
// under test and states what the broker can do:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, transporttest.Harness{
//			New: func(t *testing.T) transport.Transport {
//				return rabbitmq.New(rabbitmq.Config{URL: url})
//			},
//			Caps: transporttest.Capabilities{Wildcards: true, Redelivery: true, Durable: true},
//		})
//	}
//
// Every subtest runs in parallel, opens its own transport through
// Harness.New and uses its own random topic and group names ("tt" followed
// by random hex), so one real broker serves all subtests, and several
// packages running the suite at once, without interference. Names are never
// reused, so brokers that keep queues or streams accumulate them; clean them
// up outside the suite if that matters.
//
// Each subtest sends and receives through the one transport it opened, and
// sends only to topics some group of the subtest has subscribed. It checks:
//
//   - every CAP header, non-ASCII values and a binary body (all 256 byte
//     values; also an empty body) arrive intact; an empty header value
//     (CAP's null) may come back empty or absent; Topic() is the topic;
//     Send leaves the caller's message unchanged;
//   - SendBatch reports success per message and delivers all; one consumer
//     receives several topics; Send from 8 goroutines loses nothing;
//   - every group gets every message; two consumers of one group together
//     get each message exactly once (the split is the broker's business);
//   - an acked message is not delivered again; a rejected one is
//     (Caps.Redelivery); a group whose consumer closed with an unacked
//     delivery gets it and the messages sent meanwhile from its next
//     consumer (Caps.Durable);
//   - CAP's wildcards (Caps.Wildcards): '*' is one word and '#' one or more
//     words, so "p.log.#" must not deliver "p.log";
//   - a Receive blocked on an empty group wakes for a new message; Receive
//     returns ctx.Err() when its context ends; Consumer.Close and
//     Transport.Close unblock Receive with ErrClosed and are idempotent;
//     Send, SendBatch and Subscribe fail after Transport.Close.
//
// The suite synchronises with channels and deadlines only. Waiting for a
// message is bounded by Harness.Timeout; checking that no message arrives
// (after an ack, or for a topic a wildcard must not match) waits a short
// quiet window derived from it.
package transporttest

import (
	"testing"
	"time"

	"github.com/go-cap/cap/transport"
)

// DefaultTimeout bounds each wait for a message when Harness.Timeout is 0.
const DefaultTimeout = 10 * time.Second

// Capabilities states which optional behaviours the transport under test
// has. The subtests for a missing capability are skipped.
type Capabilities struct {
	// Wildcards: subscriptions with CAP's * and # receive matching topics.
	Wildcards bool
	// Redelivery: a rejected message is delivered again to the group
	// promptly (within the suite's timeout).
	Redelivery bool
	// Durable: messages sent while a group that subscribed before has no
	// open consumer are delivered when a consumer of the group comes back.
	Durable bool
}

// Harness connects the suite to the transport under test.
type Harness struct {
	// New returns a transport connected to the broker under test. The suite
	// closes it. New may call t.Skip when the broker is unreachable.
	New func(t *testing.T) transport.Transport
	// Caps states the transport's optional behaviours.
	Caps Capabilities
	// Timeout bounds each wait for a message (0 means DefaultTimeout).
	Timeout time.Duration
}

// suite carries the harness and the derived waits to every subtest.
type suite struct {
	h       Harness
	timeout time.Duration
	// quiet is how long a check that nothing arrives waits.
	quiet time.Duration
}

type subtest struct {
	name string
	// skip returns a reason to skip the subtest, or "".
	skip func(Capabilities) string
	run  func(s *suite, t *testing.T)
}

func always(Capabilities) string { return "" }

var subtests = []subtest{
	{"SendReceive", always, (*suite).testSendReceive},
	{"EmptyBody", always, (*suite).testEmptyBody},
	{"SendBatch", always, (*suite).testSendBatch},
	{"MultipleTopics", always, (*suite).testMultipleTopics},
	{"FanOutAcrossGroups", always, (*suite).testFanOut},
	{"CompetingConsumers", always, (*suite).testCompetingConsumers},
	{"AckIsFinal", always, (*suite).testAckIsFinal},
	{"RejectRedelivers", func(c Capabilities) string {
		if !c.Redelivery {
			return "transport does not redeliver rejected messages promptly (Caps.Redelivery)"
		}
		return ""
	}, (*suite).testRejectRedelivers},
	{"ConsumerResumes", func(c Capabilities) string {
		if !c.Durable {
			return "transport does not keep messages for a group with no open consumer (Caps.Durable)"
		}
		return ""
	}, (*suite).testConsumerResumes},
	{"Wildcards", func(c Capabilities) string {
		if !c.Wildcards {
			return "transport does not support wildcard subscriptions (Caps.Wildcards)"
		}
		return ""
	}, (*suite).testWildcards},
	{"ReceiveWaits", always, (*suite).testReceiveWaits},
	{"ReceiveContext", always, (*suite).testReceiveContext},
	{"ConsumerClose", always, (*suite).testConsumerClose},
	{"TransportClose", always, (*suite).testTransportClose},
	{"ConcurrentSend", always, (*suite).testConcurrentSend},
}

// Run runs the conformance suite against the transport h describes. The
// subtests run in parallel; Run returns once they have all finished, so the
// caller may release the broker afterwards, with defer or t.Cleanup.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("transporttest: Harness.New is nil")
	}
	s := &suite{h: h, timeout: h.Timeout}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	s.quiet = min(max(s.timeout/20, 200*time.Millisecond), time.Second)

	// The enclosing t.Run blocks until its parallel subtests finish; without
	// it they would run only after the caller's deferred calls.
	t.Run("transporttest", func(t *testing.T) {
		for _, st := range subtests {
			t.Run(st.name, func(t *testing.T) {
				t.Parallel()
				if reason := st.skip(h.Caps); reason != "" {
					t.Skip(reason)
				}
				st.run(s, t)
			})
		}
	})
}
