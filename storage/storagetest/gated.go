package storagetest

import (
	"context"
	"slices"
	"sync"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// SendLog records, for a test of several bus instances on one broker,
// which instance forwarded each message and which messages each instance
// was asked to send. It is safe for concurrent use.
type SendLog struct {
	mu    sync.Mutex
	by    map[string][]string // message id → instances whose send succeeded
	asked map[string][]string // instance → message ids it was asked to send
}

// NewSendLog returns an empty log.
func NewSendLog() *SendLog {
	return &SendLog{by: map[string][]string{}, asked: map[string][]string{}}
}

// Forwarded returns, for every message sent, the instances whose send of
// it succeeded (a copy).
func (l *SendLog) Forwarded() map[string][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]string, len(l.by))
	for id, by := range l.by {
		out[id] = slices.Clone(by)
	}
	return out
}

// Asked returns the ids of the messages instance was asked to send since
// the last ResetAsked, in order.
func (l *SendLog) Asked(instance string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.asked[instance])
}

// ResetAsked forgets which messages the instances were asked to send.
func (l *SendLog) ResetAsked() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.asked)
}

// GatedTransport is one instance's transport in a test of several: it
// forwards to a shared transport and records each send in Log under Name.
// While a gate is set, a send first waits for the gate, and fails with
// its error when it returns one (a broker that hangs, or an instance that
// never completes a send).
type GatedTransport struct {
	transport.Transport
	Name string
	Log  *SendLog

	mu   sync.Mutex
	gate func(ctx context.Context) error
}

// SetGate sets the gate sends wait for; nil removes it.
func (g *GatedTransport) SetGate(f func(ctx context.Context) error) {
	g.mu.Lock()
	g.gate = f
	g.mu.Unlock()
}

// Send sends one message as SendBatch does.
func (g *GatedTransport) Send(ctx context.Context, m *message.Message) error {
	return g.SendBatch(ctx, []*message.Message{m})[0]
}

// SendBatch records the messages as asked of this instance, waits for the
// gate, forwards them and records those sent.
func (g *GatedTransport) SendBatch(ctx context.Context, msgs []*message.Message) []error {
	g.Log.mu.Lock()
	for _, m := range msgs {
		g.Log.asked[g.Name] = append(g.Log.asked[g.Name], m.ID())
	}
	g.Log.mu.Unlock()
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		if err := gate(ctx); err != nil {
			errs := make([]error, len(msgs))
			for i := range errs {
				errs[i] = err
			}
			return errs
		}
	}
	errs := g.Transport.SendBatch(ctx, msgs)
	g.Log.mu.Lock()
	for i, m := range msgs {
		if errs == nil || errs[i] == nil {
			g.Log.by[m.ID()] = append(g.Log.by[m.ID()], g.Name)
		}
	}
	g.Log.mu.Unlock()
	return errs
}
