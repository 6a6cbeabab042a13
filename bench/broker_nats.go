package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
	capnats "github.com/go-cap/cap/transport/nats"
)

func init() {
	addServerFlag("nats", "CAP_TEST_NATS", "nats://127.0.0.1:4222", "NATS URL (JetStream enabled)")
	registerTransport("nats", openNATS)
}

// natsBroker is NATS JetStream's raw side: an admin connection for the
// baselines, purges and the clean-up. The bench's topics share the stream
// "bench" (their first word); the run removes its own consumers, and the
// stream once no consumer is left on it.
type natsBroker struct {
	url string
	nc  *nats.Conn
	js  jetstream.JetStream
	tr  *capnats.Transport
}

func openNATS(ctx context.Context, cfg *config, prefix string) (transport.Transport, rawBroker, error) {
	url := cfg.server("nats")
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("nats at %s (set -nats or CAP_TEST_NATS): %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	tr, err := capnats.New(capnats.Config{URL: url, Name: "cap-bench", Logger: cfg.logger()})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return tr, &natsBroker{url: url, nc: nc, js: js, tr: tr}, nil
}

// purge empties a group's view of topic: its durable consumer is deleted
// and created again at the end of the stream (deliver-new), which a purge
// of the shared stream would not do for one group only.
func (r *natsBroker) purge(ctx context.Context, group, topic string) error {
	stream, name := capnats.StreamName(topic), capnats.DurableName(group, topic)
	if err := r.js.DeleteConsumer(ctx, stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	c, err := r.tr.Subscribe(ctx, group, []string{topic})
	if err != nil {
		return err
	}
	return c.Close()
}

func (r *natsBroker) close(groups []string) {
	defer r.nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	streams := map[string]bool{}
	for _, topic := range []string{topic, "bench.rawlatency"} {
		stream := capnats.StreamName(topic)
		streams[stream] = true
		for _, g := range groups {
			err := r.js.DeleteConsumer(ctx, stream, capnats.DurableName(g, topic))
			if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
				fmt.Fprintf(os.Stderr, "bench: delete consumer %s: %v\n", capnats.DurableName(g, topic), err)
			}
		}
	}
	for stream := range streams {
		s, err := r.js.Stream(ctx, stream)
		if err != nil {
			continue
		}
		if info, err := s.Info(ctx); err == nil && info.State.Consumers == 0 {
			_ = r.js.DeleteStream(ctx, stream) // nobody else's run is on it
		}
	}
}

// natsMsg is the NATS form of m, as the transport sends it.
func natsMsg(m *message.Message) *nats.Msg {
	h := make(nats.Header, len(m.Headers))
	for k, v := range m.Headers {
		h[k] = []string{v}
	}
	return &nats.Msg{Subject: m.Name(), Header: h, Data: m.Body}
}

// rawSend publishes with JetStream's asynchronous publish (Nats-Msg-Id
// set, as the transport does) and waits for every ack.
func (r *natsBroker) rawSend(ctx context.Context, msgs []*message.Message) error {
	js, err := jetstream.New(r.nc, jetstream.WithPublishAsyncMaxPending(capnats.DefaultMaxAsyncPending))
	if err != nil {
		return err
	}
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(natsMsg(m), jetstream.WithMsgID(m.ID()), jetstream.WithStallWait(30*time.Second))
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// rawLatency: the group's stream and durable consumer are set up as the
// transport sets them up; then a pull consumer of the client's own (the
// transport's in-flight bound as its buffer) acks each message, and the
// sender publishes asynchronously.
func (r *natsBroker) rawLatency(ctx context.Context, p *latencyProbe, topic, group string) error {
	c, err := r.tr.Subscribe(ctx, group, []string{topic})
	if err != nil {
		return err
	}
	if err := c.Close(); err != nil {
		return err
	}
	cons, err := r.js.Consumer(ctx, capnats.StreamName(topic), capnats.DurableName(group, topic))
	if err != nil {
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		p.received(map[string]string{"bench-sent": m.Headers().Get("bench-sent")})
		_ = m.Ack()
	}, jetstream.PullMaxMessages(capnats.DefaultMaxInFlight))
	if err != nil {
		return err
	}
	defer cc.Stop()
	js, err := jetstream.New(r.nc)
	if err != nil {
		return err
	}
	return p.run(ctx, func(ctx context.Context) error {
		// No Nats-Msg-Id: the probe numbers its messages from 1 in every
		// run, and the stream would drop a later run's as duplicates.
		_, err := js.PublishMsgAsync(natsMsg(p.stamp()))
		return err
	})
}
