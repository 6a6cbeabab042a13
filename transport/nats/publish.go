package nats

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// toMsg returns the NATS message of msg: subject = cap-msg-name, every
// header as a NATS header (CAP's null as an empty value), the body as it is.
// JetStream's Nats-Msg-Id is set from cap-msg-id by the publish option.
func toMsg(msg *message.Message) (*nats.Msg, error) {
	topic := msg.Name()
	if topic == "" {
		return nil, ErrNoTopic
	}
	b, err := bind("", topic)
	if err != nil {
		return nil, err
	}
	subject := b.subject
	if b.filter || subject != topic {
		return nil, fmt.Errorf("%w %q: a message's topic cannot hold wildcards", ErrInvalidTopic, topic)
	}
	h := make(nats.Header, len(msg.Headers)+1)
	for k, v := range msg.Headers {
		if k == "" || !validHeaderKey(k) {
			return nil, fmt.Errorf("nats: header key %q cannot be sent as a NATS header", k)
		}
		h[k] = []string{v}
	}
	return &nats.Msg{Subject: subject, Header: h, Data: msg.Body}, nil
}

// validHeaderKey reports whether k can be written as a NATS header name
// (printable ASCII without ':').
func validHeaderKey(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

func pubOpts(msg *message.Message) []jetstream.PublishOpt {
	if id := msg.ID(); id != "" {
		return []jetstream.PublishOpt{jetstream.WithMsgID(id)}
	}
	return nil
}

// publishError names a publish failure: no stream, unavailable, or other.
func (t *Transport) publishError(ctx context.Context, err error) error {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("nats: publish: %w: %w", ErrNoStream, transport.ErrUnavailable)
	}
	return t.classify(ctx, "publish", err)
}

// Send implements transport.Transport: it publishes msg with Nats-Msg-Id =
// cap-msg-id and returns once JetStream has stored it (a PubAck). A
// message JetStream already has, by its id within the stream's duplicate
// window, counts as sent, so a retry after a lost ack does not store it
// twice.
func (t *Transport) Send(ctx context.Context, msg *message.Message) error {
	if err := t.ready("send"); err != nil {
		return err
	}
	m, err := toMsg(msg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.PublishTimeout)
	defer cancel()
	if _, err := t.js.PublishMsg(ctx, m, pubOpts(msg)...); err != nil {
		return t.publishError(ctx, err)
	}
	return nil
}

// SendBatch implements transport.Transport with asynchronous publishes
// whose acks it then waits for, matched per message.
func (t *Transport) SendBatch(ctx context.Context, msgs []*message.Message) []error {
	return t.PublishBatch(ctx, msgs)()
}

// PublishBatch implements transport.Pipeliner: it publishes msgs with
// JetStream's asynchronous publish and returns the wait for their acks.
// Each message gets its own outcome; errors meaning the server cannot be
// reached wrap transport.ErrUnavailable, and the outcome of such a message
// is unknown (a retry within the duplicate window is de-duplicated by its
// Nats-Msg-Id).
func (t *Transport) PublishBatch(ctx context.Context, msgs []*message.Message) (wait func() []error) {
	if len(msgs) == 0 {
		return func() []error { return nil }
	}
	errs := make([]error, len(msgs))
	failed := false
	done := func() []error { return errs }
	if err := t.ready("send"); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return done
	}
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, msg := range msgs {
		m, err := toMsg(msg)
		if err == nil {
			opts := append(pubOpts(msg), jetstream.WithStallWait(t.cfg.PublishTimeout))
			futures[i], err = t.js.PublishMsgAsync(m, opts...)
			if err != nil {
				err = t.publishError(ctx, err)
			}
		}
		if err != nil {
			errs[i], failed = err, true
			if errors.Is(err, transport.ErrUnavailable) && !errors.Is(err, ErrNoStream) {
				for j := i + 1; j < len(msgs); j++ {
					errs[j] = err
				}
				break
			}
		}
	}
	return func() []error {
		timer := time.NewTimer(t.cfg.PublishTimeout)
		defer timer.Stop()
	loop:
		for i, f := range futures {
			if f == nil {
				continue
			}
			select {
			case <-f.Ok():
			case err := <-f.Err():
				errs[i], failed = t.publishError(ctx, err), true
			case <-ctx.Done():
				errs[i], failed = fmt.Errorf("nats: waiting for the publish ack: %w", ctx.Err()), true
			case <-timer.C:
				timeout := fmt.Errorf("nats: %w: no publish ack within %s", transport.ErrUnavailable, t.cfg.PublishTimeout)
				for j := i; j < len(futures); j++ {
					if futures[j] == nil {
						continue
					}
					select {
					case <-futures[j].Ok():
					case err := <-futures[j].Err():
						errs[j], failed = t.publishError(ctx, err), true
					default:
						errs[j], failed = timeout, true
					}
				}
				break loop
			}
		}
		if !failed {
			return nil
		}
		return errs
	}
}
