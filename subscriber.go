package cap

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/go-cap/cap/internal/engine"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/retry"
)

// Msg is a received message with its payload decoded into T. A T of
// []byte or json.RawMessage receives the body as it is.
type Msg[T any] struct {
	ID      string          // cap-msg-id
	Topic   string          // cap-msg-name
	Group   string          // the group, as decorated by the bus
	Headers message.Headers // every header, read-only by convention
	Payload T
	// Retries is the number of failed attempts before this one.
	Retries int
}

// SubscribeOption changes one subscription.
type SubscribeOption func(*subscribeConfig)

type subscribeConfig struct {
	retry retry.Policy
}

// WithRetry gives the subscriber its own retry policy.
func WithRetry(p retry.Policy) SubscribeOption { return func(c *subscribeConfig) { c.retry = p } }

// Permanent wraps err so that the message fails at once, with no retry.
// Return it from a handler for input that can never succeed.
func Permanent(err error) error { return engine.Permanent(err) }

// Subscribe registers h for topic in group (the empty group means
// Options.DefaultGroup). The topic may hold CAP's wildcards: '*' for one
// word, '#' for one or more. Every group gets each message; handlers of one
// group share them. A returned error is retried by the retry policy; a
// panic counts as an error. Subscribe must be called before Start.
func Subscribe[T, TTx any](b *Bus[TTx], topic, group string, h func(ctx context.Context, m Msg[T]) error, opts ...SubscribeOption) error {
	if h == nil {
		return fmt.Errorf("%w: nil handler", ErrInvalidTopic)
	}
	return register(b, topic, group, false, opts, func(ctx context.Context, _ TTx, m Msg[T]) (any, bool, error) {
		return nil, false, h(ctx, m)
	})
}

// SubscribeReply registers a handler whose result is published to the
// message's cap-callback-name topic (see WithCallback), with cap-corr-id set
// to the incoming id and cap-corr-seq one higher. The reply is stored in the
// same transaction that marks the message Succeeded.
func SubscribeReply[T, R, TTx any](b *Bus[TTx], topic, group string, h func(ctx context.Context, m Msg[T]) (R, error), opts ...SubscribeOption) error {
	if h == nil {
		return fmt.Errorf("%w: nil handler", ErrInvalidTopic)
	}
	return register(b, topic, group, false, opts, func(ctx context.Context, _ TTx, m Msg[T]) (any, bool, error) {
		r, err := h(ctx, m)
		return r, true, err
	})
}

// SubscribeTx registers a transactional handler: it receives a transaction
// of the storage, and its writes commit together with the Received row's
// change to Succeeded. With the de-duplication of (cap-msg-id, group) on
// arrival, its effect happens exactly once per group, even when the
// message is delivered twice or another instance retries it.
func SubscribeTx[T, TTx any](b *Bus[TTx], topic, group string, h func(ctx context.Context, tx TTx, m Msg[T]) error, opts ...SubscribeOption) error {
	if h == nil {
		return fmt.Errorf("%w: nil handler", ErrInvalidTopic)
	}
	return register(b, topic, group, true, opts, func(ctx context.Context, tx TTx, m Msg[T]) (any, bool, error) {
		return nil, false, h(ctx, tx, m)
	})
}

func register[T, TTx any](b *Bus[TTx], topic, group string, tx bool, opts []SubscribeOption,
	call func(ctx context.Context, tx TTx, m Msg[T]) (reply any, hasReply bool, err error)) error {
	if topic == "" {
		return fmt.Errorf("%w: empty topic", ErrInvalidTopic)
	}
	var c subscribeConfig
	for _, o := range opts {
		o(&c)
	}
	sub := &engine.Subscriber[TTx]{
		Topic: b.opts.topicName(topic),
		Group: b.opts.groupName(group),
		Retry: c.retry,
		Tx:    tx,
	}
	ser := b.opts.Serializer
	sub.Invoke = func(ctx context.Context, tx TTx, msg *message.Message, retries int) (*engine.Reply, error) {
		m := Msg[T]{ID: msg.ID(), Topic: msg.Name(), Group: msg.Group(), Headers: msg.Headers, Retries: retries}
		if err := decodePayload(ser, msg.Body, &m.Payload); err != nil {
			return nil, engine.Permanent(fmt.Errorf("decode %s payload: %w", typeName(&m.Payload), err))
		}
		reply, hasReply, err := call(ctx, tx, m)
		if err != nil || !hasReply {
			return nil, err
		}
		return b.reply(msg, reply)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != 0 {
		return ErrStarted
	}
	if !b.reg.Add(sub) {
		return fmt.Errorf("%w: topic %q in group %q", ErrDuplicateSubscriber, sub.Topic, sub.Group)
	}
	return nil
}

func decodePayload[T any](ser message.Serializer, body []byte, dst *T) error {
	switch p := any(dst).(type) {
	case *[]byte:
		*p = body
		return nil
	case *json.RawMessage:
		*p = body
		return nil
	}
	return ser.Unmarshal(body, dst)
}

// reply builds the callback message of a handled message, or nil when the
// message names no callback.
func (b *Bus[TTx]) reply(parent *message.Message, payload any) (*engine.Reply, error) {
	cb := parent.CallbackName()
	if cb == "" {
		return nil, nil
	}
	c := publishConfig{corrID: parent.ID(), corrSeq: parent.CorrelationSequence() + 1}
	if tp := parent.Headers[message.HeaderTraceParent]; tp != "" {
		c.headers = message.Headers{message.HeaderTraceParent: tp}
	}
	// As in CAP, the reply goes through the publish path, TopicNamePrefix
	// included.
	rec, m, err := b.newMessage(cb, payload, &c, true, nil)
	if err != nil {
		return nil, err
	}
	return &engine.Reply{Record: rec, Message: m}, nil
}

// Groups returns, for each group, the topics subscribed in it, after the
// bus's prefixes and version were applied.
func (b *Bus[TTx]) Groups() map[string][]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string][]string{}
	for _, g := range b.reg.Groups() {
		out[g] = b.reg.Topics(g)
	}
	return out
}
