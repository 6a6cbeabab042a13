package redis

import (
	"context"
	"sync"
	"testing"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/transporttest"
)

// Every capability of the suite: Redis keeps entries for a group with no
// consumer (Durable), Reject redelivers at once (Redelivery) and wildcards
// are resolved against the existing stream keys (Wildcards).
func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			k := &keyTracker{}
			t.Cleanup(k.deleteKeys(t)) // runs after the suite closes the transport
			k.Transport = newTransport(t, Config{})
			return k
		},
		Caps: transporttest.Capabilities{Wildcards: true, Redelivery: true, Durable: true},
	})
}

// keyTracker records the streams the suite creates, which would otherwise
// stay on the shared server.
type keyTracker struct {
	*Transport
	mu   sync.Mutex
	keys map[string]bool
}

func (k *keyTracker) add(names ...string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil {
		k.keys = map[string]bool{}
	}
	for _, n := range names {
		if !transport.IsWildcard(n) {
			k.keys[n] = true
		}
	}
}

func (k *keyTracker) Send(ctx context.Context, m *message.Message) error {
	k.add(m.Name())
	return k.Transport.Send(ctx, m)
}

func (k *keyTracker) SendBatch(ctx context.Context, msgs []*message.Message) []error {
	for _, m := range msgs {
		k.add(m.Name())
	}
	return k.Transport.SendBatch(ctx, msgs)
}

func (k *keyTracker) Subscribe(ctx context.Context, group string, topics []string) (transport.Consumer, error) {
	k.add(topics...)
	return k.Transport.Subscribe(ctx, group, topics)
}

func (k *keyTracker) deleteKeys(t *testing.T) func() {
	return func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		if len(k.keys) == 0 {
			return
		}
		keys := make([]string, 0, len(k.keys))
		for n := range k.keys {
			keys = append(keys, n)
		}
		rdb := admin(t)
		if err := rdb.Del(context.Background(), keys...).Err(); err != nil {
			t.Logf("delete streams: %v", err)
		}
	}
}
