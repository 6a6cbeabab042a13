package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/memory"
	"github.com/go-cap/cap/transport/rabbitmq"
)

// broker is the transport under test and what the baselines need of the
// same broker: raw sends with asynchronous confirms and raw latency.
type broker struct {
	kind   string
	prefix string // private to this run: group prefix and exchange
	tr     transport.Transport

	// RabbitMQ only.
	url      string
	exchange string
	admin    *amqp.Connection

	mu     sync.Mutex
	queues []string // declared by this run, deleted by close

	stats *statTransport // with -stats: counts the bus's sends
}

// busTransport returns tr as the bus should use it: counted with -stats.
func (b *broker) busTransport(tr transport.Transport) transport.Transport {
	if b.stats == nil {
		return tr
	}
	b.stats.Transport = tr
	return b.stats
}

func openBroker(ctx context.Context, cfg *config) (*broker, error) {
	b := &broker{kind: cfg.transport, prefix: newName("capbench.")}
	if cfg.transport == "memory" {
		b.tr = memory.New()
		return b, nil
	}
	b.url = cfg.rabbitURL
	b.exchange = b.prefix + ".router"
	conn, err := amqp.DialConfig(b.url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return nil, fmt.Errorf("rabbitmq at %s (set -rabbitmq or CAP_TEST_RABBITMQ): %w", redactURL(b.url), err)
	}
	b.admin = conn
	tr, err := b.newRabbit(cfg)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	b.tr = tr
	return b, nil
}

func (b *broker) newRabbit(cfg *config) (*rabbitmq.Transport, error) {
	return rabbitmq.New(rabbitmq.Config{URL: b.url, ExchangeName: b.exchange, ConnectionName: "cap-bench",
		Logger: cfg.logger()})
}

// group returns the name the bus gives group, with the run's prefix and
// the default version: the queue's name on RabbitMQ.
func (b *broker) group(name string) string { return b.prefix + "." + name + ".v1" }

// addQueue remembers a queue to delete at the end of the run.
func (b *broker) addQueue(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, q := range b.queues {
		if q == name {
			return
		}
	}
	b.queues = append(b.queues, name)
}

// sink binds a queue with no consumer to topic, so that every message sent
// is stored by the broker as it would be for a real subscriber. It returns
// the queue's name.
func (b *broker) sink(ctx context.Context, name, topic string) (string, error) {
	q := b.group(name)
	b.addQueue(q)
	c, err := b.tr.Subscribe(ctx, q, []string{topic})
	if err != nil {
		return "", fmt.Errorf("bind %s: %w", q, err)
	}
	return q, c.Close() // the queue and its binding stay
}

// purge empties a queue between phases.
func (b *broker) purge(ctx context.Context, queue, topic string) error {
	if b.kind == "rabbitmq" {
		ch, err := b.admin.Channel()
		if err != nil {
			return err
		}
		defer ch.Close()
		_, err = ch.QueuePurge(queue, false)
		return err
	}
	c, err := b.tr.Subscribe(ctx, queue, []string{topic})
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		rctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		d, err := c.Receive(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil // empty
		}
		if err := d.Ack(ctx); err != nil {
			return err
		}
	}
}

// close closes the transport and deletes what the run declared.
func (b *broker) close() {
	_ = b.tr.Close()
	if b.admin == nil {
		return
	}
	defer b.admin.Close()
	ch, err := b.admin.Channel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: rabbitmq clean-up:", err)
		return
	}
	defer ch.Close()
	for _, q := range b.queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			fmt.Fprintf(os.Stderr, "bench: delete queue %s: %v\n", q, err)
			if ch, err = b.admin.Channel(); err != nil {
				return
			}
		}
	}
	if err := ch.ExchangeDelete(b.exchange, false, false); err != nil {
		fmt.Fprintf(os.Stderr, "bench: delete exchange %s: %v\n", b.exchange, err)
	}
}

// rawSend is the burn-down baseline: it sends msgs to the broker as fast as
// it can and returns once the broker has confirmed them all. On RabbitMQ it
// publishes on one channel with asynchronous confirms, in the transport's
// wire format (persistent, the headers as AMQP strings); on the in-memory
// broker it calls SendBatch with batches of 100.
func (b *broker) rawSend(ctx context.Context, msgs []*message.Message) error {
	if b.kind != "rabbitmq" {
		for i := 0; i < len(msgs); i += 100 {
			if errs := b.tr.SendBatch(ctx, msgs[i:min(i+100, len(msgs))]); errs != nil {
				return errors.Join(errs...)
			}
		}
		return nil
	}
	conn, err := amqp.Dial(b.url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, len(msgs)+1))
	for _, m := range msgs {
		if err := ch.PublishWithContext(ctx, b.exchange, m.Name(), false, false, publishing(m)); err != nil {
			return err
		}
	}
	for range msgs {
		select {
		case c, ok := <-confirms:
			if !ok {
				return errors.New("rabbitmq: channel closed before every confirm arrived")
			}
			if !c.Ack {
				return errors.New("rabbitmq: a raw publish was nacked")
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// publishing is the AMQP form of m, as the transport sends it.
func publishing(m *message.Message) amqp.Publishing {
	h := make(amqp.Table, len(m.Headers))
	for k, v := range m.Headers {
		h[k] = v
	}
	return amqp.Publishing{Headers: h, MessageId: m.ID(), DeliveryMode: amqp.Persistent, Body: m.Body}
}

// rawLatency is the latency baseline: messages of size bytes sent at rate
// for d straight to the broker and received by one consumer, which acks
// each. It measures from the start of the send to the receive. On RabbitMQ
// the sender uses asynchronous confirms and the consumer the transport's
// prefetch.
func (b *broker) rawLatency(ctx context.Context, rate int, d time.Duration, size int) (*histogram, error) {
	topic := "bench.rawlatency"
	h := &histogram{}
	var sent atomic.Int64
	epoch := time.Now()
	body := make([]byte, size)
	for i := range body {
		body[i] = 'x'
	}
	stamp := func() *message.Message {
		n := sent.Add(1)
		return &message.Message{Headers: message.Headers{
			message.HeaderMessageID:   strconv.FormatInt(n, 10),
			message.HeaderMessageName: topic,
			"bench-sent":              strconv.FormatInt(int64(time.Since(epoch)), 10),
		}, Body: body}
	}
	latencyOf := func(hs map[string]string) {
		if v, err := strconv.ParseInt(hs["bench-sent"], 10, 64); err == nil {
			h.record(time.Since(epoch) - time.Duration(v))
		}
	}
	if b.kind != "rabbitmq" {
		q := b.group("rawlatency")
		c, err := b.tr.Subscribe(ctx, q, []string{topic})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				dl, err := c.Receive(ctx)
				if err != nil {
					return
				}
				latencyOf(dl.Message().Headers)
				_ = dl.Ack(ctx)
			}
		}()
		err = pace(ctx, rate, d, 1, func(ctx context.Context) error { return b.tr.Send(ctx, stamp()) })
		waitFor(ctx, 5*time.Second, func() bool { return h.count() >= sent.Load() })
		_ = c.Close()
		<-done
		return h, err
	}

	q := b.group("rawlatency")
	b.addQueue(q)
	cconn, err := amqp.Dial(b.url)
	if err != nil {
		return nil, err
	}
	defer cconn.Close()
	cch, err := cconn.Channel()
	if err != nil {
		return nil, err
	}
	if err := cch.ExchangeDeclare(b.exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return nil, err
	}
	if _, err := cch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		return nil, err
	}
	if err := cch.QueueBind(q, topic, b.exchange, false, nil); err != nil {
		return nil, err
	}
	if err := cch.Qos(rabbitmq.DefaultPrefetch, 0, false); err != nil {
		return nil, err
	}
	deliveries, err := cch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for dl := range deliveries {
			hs := map[string]string{}
			if v, ok := dl.Headers["bench-sent"].(string); ok {
				hs["bench-sent"] = v
			}
			latencyOf(hs)
			_ = dl.Ack(false)
		}
	}()

	pconn, err := amqp.Dial(b.url)
	if err != nil {
		return nil, err
	}
	defer pconn.Close()
	pch, err := pconn.Channel()
	if err != nil {
		return nil, err
	}
	if err := pch.Confirm(false); err != nil {
		return nil, err
	}
	confirms := pch.NotifyPublish(make(chan amqp.Confirmation, 1024))
	go func() {
		for range confirms { // asynchronous: drained, not waited for
		}
	}()
	var mu sync.Mutex // one publisher at a time on a channel
	err = pace(ctx, rate, d, 1, func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		m := stamp()
		return pch.PublishWithContext(ctx, b.exchange, topic, false, false, publishing(m))
	})
	waitFor(ctx, 5*time.Second, func() bool { return h.count() >= sent.Load() })
	_ = cch.Close()
	<-done
	return h, err
}

// waitFor polls cond every 5 ms until it holds or limit passes; it reports
// whether it held.
func waitFor(ctx context.Context, limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// counting wraps a transport and counts the messages the broker accepted,
// to time the burn-down and the dispatch without querying the database.
type counting struct {
	transport.Transport
	sent atomic.Int64
	// target and reached: reached closes when sent reaches target.
	target  atomic.Int64
	reached chan struct{}
	once    sync.Once
	at      atomic.Int64 // UnixNano when target was reached
}

func newCounting(tr transport.Transport) *counting {
	return &counting{Transport: tr, reached: make(chan struct{})}
}

func (c *counting) add(n int64) {
	if n == 0 {
		return
	}
	total := c.sent.Add(n)
	if t := c.target.Load(); t > 0 && total >= t {
		c.once.Do(func() {
			c.at.Store(time.Now().UnixNano())
			close(c.reached)
		})
	}
}

// addSent counts the messages of a batch of n that errs does not fail.
func (c *counting) addSent(n int, errs []error) {
	ok := int64(n)
	for _, e := range errs {
		if e != nil {
			ok--
		}
	}
	c.add(ok)
}

func (c *counting) Send(ctx context.Context, m *message.Message) error {
	err := c.Transport.Send(ctx, m)
	if err == nil {
		c.add(1)
	}
	return err
}

func (c *counting) SendBatch(ctx context.Context, msgs []*message.Message) []error {
	errs := c.Transport.SendBatch(ctx, msgs)
	c.addSent(len(msgs), errs)
	return errs
}

// PublishBatch implements transport.Pipeliner as the wrapped transport
// does; on one that does not, it sends at once.
func (c *counting) PublishBatch(ctx context.Context, msgs []*message.Message) func() []error {
	wait := publishBatch(ctx, c.Transport, msgs)
	return func() []error {
		errs := wait()
		c.addSent(len(msgs), errs)
		return errs
	}
}

// publishBatch publishes through tr's PublishBatch when it has one, and
// otherwise sends at once and returns the result.
func publishBatch(ctx context.Context, tr transport.Transport, msgs []*message.Message) func() []error {
	if p, ok := tr.(transport.Pipeliner); ok {
		return p.PublishBatch(ctx, msgs)
	}
	errs := tr.SendBatch(ctx, msgs)
	return func() []error { return errs }
}
