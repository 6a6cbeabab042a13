// Package transport defines the Transport interface the bus sends and
// receives messages through. Brokers live in sub-packages; transporttest is
// the conformance suite each of them passes.
//
// Transports stay thin: retries, backoff, batching of store writes, header
// checks and the handling of foreign messages live once, in the bus.
package transport

import (
	"context"
	"errors"

	"github.com/go-cap/cap/message"
)

// Errors a transport returns. Callers test them with errors.Is.
var (
	// ErrClosed: the transport or consumer was closed.
	ErrClosed = errors.New("transport: closed")
	// ErrUnavailable: the broker cannot be reached now; the operation may
	// succeed later.
	ErrUnavailable = errors.New("transport: broker unavailable")
)

// Transport sends messages to a broker and opens consumers on it.
// Implementations are safe for concurrent use.
type Transport interface {
	// Send publishes one message to the topic in its cap-msg-name header,
	// with its headers as broker headers and its body as the payload. It
	// returns only once the broker has accepted the message.
	Send(ctx context.Context, msg *message.Message) error
	// SendBatch publishes several messages and returns one error per
	// message (nil for success), in order. A nil slice means all succeeded.
	SendBatch(ctx context.Context, msgs []*message.Message) []error
	// Subscribe opens a consumer for group on the given topics, which may
	// hold CAP's wildcards (* for one word, # for one or more words).
	// Subscribe returns once the group is bound: every message sent after it
	// returns reaches the group. Messages sent while no consumer of a group
	// that subscribed before is open are kept for it where the broker can
	// (see the transport's documentation). Several consumers of one group
	// compete for its messages; every group gets every message.
	Subscribe(ctx context.Context, group string, topics []string) (Consumer, error)
	// Close releases the transport. It is idempotent and unblocks
	// receivers, which then return ErrClosed.
	Close() error
}

// Pipeliner is implemented by transports that can publish a batch and wait
// for the broker's confirmations later. The bus then publishes the next
// batch while the broker confirms the previous ones, so that more messages
// are in flight than one batch.
type Pipeliner interface {
	// PublishBatch publishes msgs and returns a function that waits for
	// the broker's confirmations and returns what SendBatch would: nil when
	// every message was sent, else one error per message. The function is
	// called once; ctx must stay alive until it returns.
	PublishBatch(ctx context.Context, msgs []*message.Message) (wait func() []error)
}

// Consumer receives the messages of one group.
type Consumer interface {
	// Receive blocks until a message arrives, ctx ends (ctx.Err()) or the
	// consumer closes (ErrClosed).
	Receive(ctx context.Context) (Delivery, error)
	// Close stops the consumer; unacknowledged deliveries return to the
	// broker. It is idempotent.
	Close() error
}

// Delivery is one received message. Exactly one of Ack or Reject should be
// called.
type Delivery interface {
	// Message returns the message; the bus may change its headers.
	Message() *message.Message
	// Topic returns the broker's own topic, routing key or subject, which
	// helps to identify a foreign message without CAP headers.
	Topic() string
	// Ack tells the broker the message is handled.
	Ack(ctx context.Context) error
	// Reject returns the message to the broker for redelivery.
	Reject(ctx context.Context) error
}

// Namer is implemented by transports that report a name for the dashboard
// ("RabbitMQ", "Kafka", "NATS JetStream", "RedisStreams", "InMemory").
type Namer interface {
	Name() string
}

// HeadersBuilder returns headers to add to a delivery that lacks CAP's
// cap-msg-id or cap-msg-name (a message from a producer that does not speak
// CAP). It is CAP's CustomHeadersBuilder.
type HeadersBuilder func(d Delivery) message.Headers

// SendEach implements SendBatch by calling send once per message, for
// transports whose broker has no cheaper batch.
func SendEach(ctx context.Context, msgs []*message.Message, send func(context.Context, *message.Message) error) []error {
	var errs []error
	for i, m := range msgs {
		if err := send(ctx, m); err != nil {
			if errs == nil {
				errs = make([]error, len(msgs))
			}
			errs[i] = err
		}
	}
	return errs
}

// Checker is implemented by transports that can tell whether they are
// connected to the broker now, for the bus's health check (Bus.Health).
type Checker interface {
	// Check returns nil when the broker is reachable, else why not (an
	// error wrapping ErrUnavailable, or ErrClosed).
	Check(ctx context.Context) error
}
