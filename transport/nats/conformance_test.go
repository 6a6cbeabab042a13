package nats

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/transporttest"
)

// Every capability of the suite: NATS has them all.
func TestConformance(t *testing.T) {
	url := serverURL(t)
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			tr := &streamTracker{url: url}
			// Registered before the suite's own cleanup closes the
			// transport, so it runs after it.
			t.Cleanup(func() { tr.deleteStreams(t) })
			tr.Transport = newTransport(t, Config{})
			return tr
		},
		Caps: transporttest.Capabilities{Wildcards: true, Redelivery: true, Durable: true},
	})
}

// streamTracker records the streams the suite's subscriptions create,
// which would otherwise stay on the shared server.
type streamTracker struct {
	*Transport
	url     string
	mu      sync.Mutex
	streams []string
}

func (s *streamTracker) Subscribe(ctx context.Context, group string, topics []string) (transport.Consumer, error) {
	s.mu.Lock()
	for _, topic := range topics {
		if name := StreamName(topic); !slices.Contains(s.streams, name) {
			s.streams = append(s.streams, name)
		}
	}
	s.mu.Unlock()
	return s.Transport.Subscribe(ctx, group, topics)
}

func (s *streamTracker) deleteStreams(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.streams) > 0 {
		deleteStreams(t, s.url, s.streams...)
	}
}
