package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/rabbitmq"
)

func init() { registerTransport("rabbitmq", openRabbit) }

// rabbitBroker is RabbitMQ's raw side: an exchange of the run's own, an
// admin connection for purges and the clean-up.
type rabbitBroker struct {
	url      string
	exchange string
	admin    *amqp.Connection
}

func openRabbit(ctx context.Context, cfg *config, prefix string) (transport.Transport, rawBroker, error) {
	r := &rabbitBroker{url: cfg.rabbitURL, exchange: prefix + ".router"}
	conn, err := amqp.DialConfig(r.url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return nil, nil, fmt.Errorf("rabbitmq at %s (set -rabbitmq or CAP_TEST_RABBITMQ): %w", redactURL(r.url), err)
	}
	r.admin = conn
	tr, err := rabbitmq.New(rabbitmq.Config{URL: r.url, ExchangeName: r.exchange, ConnectionName: "cap-bench",
		Logger: cfg.logger()})
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return tr, r, nil
}

func (r *rabbitBroker) purge(_ context.Context, queue, _ string) error {
	ch, err := r.admin.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	_, err = ch.QueuePurge(queue, false)
	return err
}

func (r *rabbitBroker) close(queues []string) {
	defer r.admin.Close()
	ch, err := r.admin.Channel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: rabbitmq clean-up:", err)
		return
	}
	defer ch.Close()
	for _, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			fmt.Fprintf(os.Stderr, "bench: delete queue %s: %v\n", q, err)
			if ch, err = r.admin.Channel(); err != nil {
				return
			}
		}
	}
	if err := ch.ExchangeDelete(r.exchange, false, false); err != nil {
		fmt.Fprintf(os.Stderr, "bench: delete exchange %s: %v\n", r.exchange, err)
	}
}

// rawSend publishes on one channel with asynchronous confirms, in the
// transport's wire format (persistent, the headers as AMQP strings).
func (r *rabbitBroker) rawSend(ctx context.Context, msgs []*message.Message) error {
	conn, err := amqp.Dial(r.url)
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
		if err := ch.PublishWithContext(ctx, r.exchange, m.Name(), false, false, publishing(m)); err != nil {
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

// rawLatency: the sender uses asynchronous confirms and the consumer the
// transport's prefetch.
func (r *rabbitBroker) rawLatency(ctx context.Context, p *latencyProbe, topic, q string) error {
	cconn, err := amqp.Dial(r.url)
	if err != nil {
		return err
	}
	defer cconn.Close()
	cch, err := cconn.Channel()
	if err != nil {
		return err
	}
	if err := cch.ExchangeDeclare(r.exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return err
	}
	if _, err := cch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		return err
	}
	if err := cch.QueueBind(q, topic, r.exchange, false, nil); err != nil {
		return err
	}
	if err := cch.Qos(rabbitmq.DefaultPrefetch, 0, false); err != nil {
		return err
	}
	deliveries, err := cch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for dl := range deliveries {
			hs := map[string]string{}
			if v, ok := dl.Headers["bench-sent"].(string); ok {
				hs["bench-sent"] = v
			}
			p.received(hs)
			_ = dl.Ack(false)
		}
	}()

	pconn, err := amqp.Dial(r.url)
	if err != nil {
		return err
	}
	defer pconn.Close()
	pch, err := pconn.Channel()
	if err != nil {
		return err
	}
	if err := pch.Confirm(false); err != nil {
		return err
	}
	confirms := pch.NotifyPublish(make(chan amqp.Confirmation, 1024))
	go func() {
		for range confirms { // asynchronous: drained, not waited for
		}
	}()
	var mu sync.Mutex // one publisher at a time on a channel
	err = p.run(ctx, func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		return pch.PublishWithContext(ctx, r.exchange, topic, false, false, publishing(p.stamp()))
	})
	_ = cch.Close()
	<-done
	return err
}
