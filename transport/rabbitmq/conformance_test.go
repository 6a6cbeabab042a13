package rabbitmq

import (
	"context"
	"sync"
	"testing"

	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/transporttest"
)

func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			tr := &queueTracker{}
			// Registered before the suite's own cleanup closes the
			// transport, so it runs after it.
			t.Cleanup(tr.deleteQueues(t))
			tr.Transport = newTransport(t, Config{})
			return tr
		},
		Caps: transporttest.Capabilities{Wildcards: true, Redelivery: true, Durable: true},
	})
}

// queueTracker records the groups the suite subscribes, whose queues would
// otherwise stay on the broker after the test.
type queueTracker struct {
	*Transport
	mu     sync.Mutex
	groups map[string]bool
}

func (q *queueTracker) Subscribe(ctx context.Context, group string, topics []string) (transport.Consumer, error) {
	q.mu.Lock()
	if q.groups == nil {
		q.groups = map[string]bool{}
	}
	q.groups[group] = true
	q.mu.Unlock()
	return q.Transport.Subscribe(ctx, group, topics)
}

func (q *queueTracker) deleteQueues(t *testing.T) func() {
	return func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if len(q.groups) == 0 {
			return
		}
		ch := adminChannel(t)
		for g := range q.groups {
			if _, err := ch.QueueDelete(g, false, false, false); err != nil {
				t.Logf("delete queue %s: %v", g, err)
			}
		}
	}
}
