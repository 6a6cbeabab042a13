package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// Subscribe implements transport.Transport. It declares the exchange, a
// durable queue named after the group and one binding per topic (the
// routing key is the topic verbatim, so RabbitMQ applies the wildcards),
// then starts consuming with manual acknowledgement and the configured
// prefetch. It returns once the bindings exist. Bindings stay when the
// consumer closes, so the queue keeps collecting the group's messages.
//
// RabbitMQ's wildcards are wider than CAP's: its # also matches zero words
// and its * any word. A delivery that the consumer's patterns route only by
// RabbitMQ's rule (a.log for a.log.#) is acknowledged and dropped, so that a
// group receives exactly the topics CAP's rule matches (transport.Match).
//
// When the channel or the connection drops, the consumer reconnects and
// resumes by itself; deliveries received before the drop can no longer be
// acknowledged and come again.
func (t *Transport) Subscribe(ctx context.Context, group string, topics []string) (transport.Consumer, error) {
	if group == "" {
		return nil, errors.New("rabbitmq: subscribe: empty group")
	}
	if t.isClosed() {
		return nil, fmt.Errorf("rabbitmq: subscribe: %w", transport.ErrClosed)
	}
	conn, err := t.consumeConns.get(ctx)
	if err != nil {
		return nil, unavailable("subscribe", err)
	}
	c := &consumer{
		t:      t,
		group:  group,
		topics: append([]string(nil), topics...),
		out:    make(chan *Delivery),
		closed: make(chan struct{}),
		done:   make(chan struct{}),
	}
	ch, deliveries, err := c.open(conn)
	if err != nil {
		return nil, err
	}
	if !t.addConsumer(c) {
		_ = ch.Close()
		return nil, fmt.Errorf("rabbitmq: subscribe: %w", transport.ErrClosed)
	}
	go c.run(ch, deliveries)
	return c, nil
}

// consumer receives the messages of one group's queue.
type consumer struct {
	t      *Transport
	group  string
	topics []string

	out       chan *Delivery
	closeOnce sync.Once
	closed    chan struct{}
	done      chan struct{} // run has returned
}

// open declares the group's topology on a new channel and starts consuming.
func (c *consumer) open(conn *amqp.Connection) (*amqp.Channel, <-chan amqp.Delivery, error) {
	cfg := &c.t.cfg
	ch, err := conn.Channel()
	if err != nil {
		return nil, nil, unavailable("open channel", err)
	}
	fail := func(op string, err error) (*amqp.Channel, <-chan amqp.Delivery, error) {
		_ = ch.Close()
		return nil, nil, unavailable(op, err)
	}
	if err := ch.ExchangeDeclare(c.t.exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fail("declare exchange "+c.t.exchange, err)
	}
	if _, err := ch.QueueDeclare(c.group, true, false, false, false, cfg.queueArgs()); err != nil {
		return fail("declare queue "+c.group, err)
	}
	for _, topic := range c.topics {
		if err := ch.QueueBind(c.group, topic, c.t.exchange, false, nil); err != nil {
			return fail("bind "+topic, err)
		}
	}
	if err := ch.Qos(cfg.Prefetch, 0, false); err != nil {
		return fail("qos", err)
	}
	deliveries, err := ch.Consume(c.group, "", false, false, false, false, nil)
	if err != nil {
		return fail("consume "+c.group, err)
	}
	return ch, deliveries, nil
}

// run hands deliveries to Receive and, when the channel or the connection
// drops, opens a new channel as soon as a connection is back.
func (c *consumer) run(ch *amqp.Channel, deliveries <-chan amqp.Delivery) {
	defer close(c.done)
	log := c.t.log.With("group", c.group)
	delay := c.t.cfg.ReconnectDelay
	for {
		if ch != nil {
			if !c.forward(ch, deliveries) {
				_ = ch.Close() // unacknowledged deliveries go back to the queue
				return
			}
			_ = ch.Close()
			ch = nil
			log.Warn("rabbitmq: consumer channel closed, resubscribing")
		}
		conn, changed := c.t.consumeConns.current()
		if conn == nil {
			select {
			case <-changed:
				continue
			case <-c.closed:
				return
			}
		}
		var err error
		ch, deliveries, err = c.open(conn)
		if err != nil {
			log.Warn("rabbitmq: resubscribe failed", "error", err, "retry_in", delay)
			select {
			case <-time.After(jitter(delay)):
			case <-c.closed:
				return
			}
			delay = min(delay*2, c.t.cfg.MaxReconnectDelay)
			continue
		}
		delay = c.t.cfg.ReconnectDelay
		log.Info("rabbitmq: consumer resumed")
	}
}

// forward passes deliveries on until the channel's delivery stream ends
// (true) or the consumer closes (false).
func (c *consumer) forward(ch *amqp.Channel, deliveries <-chan amqp.Delivery) bool {
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return true
			}
			if !wanted(c.topics, d.RoutingKey) {
				// Routed by RabbitMQ's wider wildcards only: nobody in the
				// group subscribed to it by CAP's rule.
				c.t.log.Debug("rabbitmq: dropping a message no pattern matches by CAP's rule",
					"group", c.group, "routing_key", d.RoutingKey, "message_id", d.MessageId)
				_ = d.Ack(false)
				continue
			}
			select {
			case c.out <- newDelivery(d):
			case <-c.closed:
				return false
			}
		case <-c.closed:
			return false
		}
	}
}

// Receive implements transport.Consumer.
func (c *consumer) Receive(ctx context.Context) (transport.Delivery, error) {
	select {
	case d := <-c.out:
		return d, nil
	case <-c.closed:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close implements transport.Consumer: it closes the channel, which returns
// unacknowledged deliveries to the queue. The queue and its bindings stay.
func (c *consumer) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	<-c.done
	c.t.removeConsumer(c)
	return nil
}

// Delivery is a message received from RabbitMQ. It implements
// transport.Delivery; Raw gives the AMQP delivery, for example to a
// transport.HeadersBuilder that reads its MessageId or other properties.
type Delivery struct {
	raw  amqp.Delivery
	msg  *message.Message
	done atomic.Bool
}

func newDelivery(d amqp.Delivery) *Delivery {
	return &Delivery{raw: d, msg: &message.Message{Headers: fromTable(d.Headers), Body: d.Body}}
}

// Message implements transport.Delivery.
func (d *Delivery) Message() *message.Message { return d.msg }

// Topic implements transport.Delivery: the routing key the message was
// published with.
func (d *Delivery) Topic() string { return d.raw.RoutingKey }

// Raw returns the AMQP delivery. Acknowledge it through Ack and Reject only.
func (d *Delivery) Raw() amqp.Delivery { return d.raw }

// Ack implements transport.Delivery. It fails with an error wrapping
// transport.ErrUnavailable when the channel the message came on has closed;
// the broker then delivers the message again.
func (d *Delivery) Ack(ctx context.Context) error {
	if err := d.settle(ctx); err != nil {
		return err
	}
	return unavailable("ack", d.raw.Ack(false))
}

// Reject implements transport.Delivery: the message goes back to its queue
// (basic.reject with requeue, as in CAP).
func (d *Delivery) Reject(ctx context.Context) error {
	if err := d.settle(ctx); err != nil {
		return err
	}
	return unavailable("reject", d.raw.Reject(true))
}

// errSettled: a second Ack or Reject of a delivery. It is refused here
// because the broker would close the channel, and every other delivery of
// the consumer with it, on an unknown delivery tag.
var errSettled = errors.New("rabbitmq: delivery already acknowledged or rejected")

func (d *Delivery) settle(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.done.Swap(true) {
		return errSettled
	}
	return nil
}
