// Package rabbitmq is the RabbitMQ transport of the bus, on
// github.com/rabbitmq/amqp091-go, with DotNetCore.CAP's broker mapping so
// that Go and .NET services exchange messages in both directions:
//
//   - a durable topic exchange, "cap.default.router" by default, suffixed
//     with ".{Version}" when Version is not "v1";
//   - one durable queue per group, named after the group, declared with
//     x-message-ttl 864000000 (10 days, a 32-bit integer) and optionally
//     x-queue-type and further arguments;
//   - one binding per subscribed topic with the topic as routing key, so that
//     RabbitMQ applies the * and # wildcards;
//   - messages published persistent (delivery mode 2) with the topic as
//     routing key, MessageId = cap-msg-id and every header as an AMQP string
//     (CAP's null as void), the body untouched;
//   - manual acknowledgement: Ack is basic.ack, Reject is basic.reject with
//     requeue.
//
// Sending uses publisher confirms on a small pool of confirm-mode channels.
// A batch is published without waiting between messages and each message is
// matched to its own confirm, so SendBatch reports per message. A nacked
// message fails with ErrNacked. Like CAP, the transport publishes without
// the mandatory flag: a message no queue is bound for is dropped by the
// broker and counts as sent, because an event without subscribers is not a
// failure of its publisher. Config.Mandatory makes such a message fail with
// ErrUnroutable instead.
//
// The transport keeps two connections, one for sending and one for
// consuming, so that the broker's flow control of busy publishers does not
// hold back acknowledgements. When a connection or a channel drops, it
// reconnects with a growing pause (Config.ReconnectDelay up to
// Config.MaxReconnectDelay), trying the configured addresses in turn, and
// consumers resume by themselves. While the connection is down, sends and
// subscriptions fail at once with an error wrapping transport.ErrUnavailable;
// a delivery received before the drop fails to Ack with such an error and
// the broker delivers it again.
package rabbitmq

import (
	"context"
	"log/slog"

	"github.com/go-cap/cap/internal/consumerset"
	"github.com/go-cap/cap/transport"
)

// Transport is a transport.Transport on RabbitMQ. It is safe for concurrent
// use.
type Transport struct {
	cfg      Config
	exchange string
	log      *slog.Logger

	publishConns *connManager
	consumeConns *connManager
	pool         *pool

	consumers *consumerset.Set[*consumer] // open consumers; closed by Close
}

var (
	_ transport.Transport = (*Transport)(nil)
	_ transport.Namer     = (*Transport)(nil)
	_ transport.Delivery  = (*Delivery)(nil)
)

// New returns a transport for cfg. It connects in the background; the
// first Send or Subscribe waits for the first connection attempt to end.
// It fails only for a config that cannot work (ErrConfig).
func New(cfg Config) (*Transport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &Transport{
		cfg:       cfg,
		exchange:  cfg.exchange(),
		log:       cfg.Logger.With("component", "rabbitmq"),
		consumers: consumerset.New[*consumer](),
	}
	t.publishConns = newConnManager(&t.cfg, "publish")
	t.consumeConns = newConnManager(&t.cfg, "consume")
	t.pool = newPool(t.publishConns, t.exchange, cfg.Mandatory, cfg.PublishChannels)
	return t, nil
}

// Name implements transport.Namer.
func (t *Transport) Name() string { return "RabbitMQ" }

// Check implements transport.Checker: both connections (publish and
// consume) are open and not blocked by the broker.
func (t *Transport) Check(context.Context) error {
	if t.isClosed() {
		return transport.ErrClosed
	}
	if err := t.publishConns.check(); err != nil {
		return err
	}
	return t.consumeConns.check()
}

// Exchange returns the name of the exchange the transport publishes to.
func (t *Transport) Exchange() string { return t.exchange }

// Close implements transport.Transport: it closes the consumers (their
// unacknowledged deliveries return to the broker) and the connections.
// Receivers then return transport.ErrClosed. It is idempotent. It returns
// once the connections are closed; a connection attempt in progress is
// waited for (at most Config.DialTimeout).
func (t *Transport) Close() error {
	consumers, first := t.consumers.Close()
	if !first {
		return nil
	}
	for _, c := range consumers {
		_ = c.Close()
	}
	t.publishConns.close()
	t.consumeConns.close()
	t.publishConns.wait()
	t.consumeConns.wait()
	return nil
}

func (t *Transport) isClosed() bool { return t.consumers.IsClosed() }

// addConsumer registers c for Close; it reports false once the transport
// is closed.
func (t *Transport) addConsumer(c *consumer) bool { return t.consumers.Add(c) }

func (t *Transport) removeConsumer(c *consumer) { t.consumers.Remove(c) }
