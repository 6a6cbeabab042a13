package cap

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/go-cap/cap/internal/telemetry"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
)

// PublishOption changes one publish.
type PublishOption func(*publishConfig)

type publishConfig struct {
	id       string
	callback string
	hasCB    bool
	headers  message.Headers
	corrID   string
	corrSeq  int
	delay    time.Duration
	at       time.Time
}

// WithID sets cap-msg-id instead of a new snowflake id. It must be unique.
func WithID(id string) PublishOption { return func(c *publishConfig) { c.id = id } }

// WithCallback names the topic a subscriber's reply is published to
// (cap-callback-name, CAP's compensation reply).
func WithCallback(topic string) PublishOption {
	return func(c *publishConfig) { c.callback, c.hasCB = topic, true }
}

// WithHeaders adds headers to the message. Keys the bus sets itself
// (cap-msg-name, cap-msg-type, cap-senttime ...) are overwritten.
func WithHeaders(h map[string]string) PublishOption {
	return func(c *publishConfig) {
		if c.headers == nil {
			c.headers = message.Headers{}
		}
		for k, v := range h {
			c.headers[k] = v
		}
	}
}

// WithCorrelation sets cap-corr-id and cap-corr-seq instead of the message's
// own id and 0.
func WithCorrelation(id string, seq int) PublishOption {
	return func(c *publishConfig) { c.corrID, c.corrSeq = id, seq }
}

// WithDelay sends the message no earlier than d from now.
func WithDelay(d time.Duration) PublishOption { return func(c *publishConfig) { c.delay = d } }

// WithAt sends the message no earlier than t.
func WithAt(t time.Time) PublishOption { return func(c *publishConfig) { c.at = t } }

// Outgoing is one message of a batch publish.
type Outgoing struct {
	Topic   string
	Payload any
	Options []PublishOption
}

// Publish stores a message in a transaction of its own and sends it at
// once. The payload is encoded by the serializer (JSON by default); a
// []byte or json.RawMessage payload is sent as it is.
func (b *Bus[TTx]) Publish(ctx context.Context, topic string, payload any, opts ...PublishOption) error {
	return b.PublishBatch(ctx, Outgoing{Topic: topic, Payload: payload, Options: opts})
}

// PublishDelay is Publish with WithDelay(d).
func (b *Bus[TTx]) PublishDelay(ctx context.Context, d time.Duration, topic string, payload any, opts ...PublishOption) error {
	return b.Publish(ctx, topic, payload, append(opts, WithDelay(d))...)
}

// PublishAt is Publish with WithAt(t).
func (b *Bus[TTx]) PublishAt(ctx context.Context, t time.Time, topic string, payload any, opts ...PublishOption) error {
	return b.Publish(ctx, topic, payload, append(opts, WithAt(t))...)
}

// PublishBatch stores several messages in one transaction of its own and
// sends them at once.
func (b *Bus[TTx]) PublishBatch(ctx context.Context, msgs ...Outgoing) error {
	handover := b.disp.Running()
	recs, ms, spans, err := b.build(ctx, msgs, handover)
	if err != nil {
		return err
	}
	if err := b.store.InsertPublished(ctx, recs); err != nil {
		err = fmt.Errorf("cap: publish: %w", err)
		endSpans(spans, err)
		return err
	}
	b.published(ctx, recs, spans)
	b.afterCommit(ctx, recs, ms, handover)
	return nil
}

// PublishTx stores a message in the caller's transaction. It is sent once
// the transaction commits: at once inside InTx, or on a plain commit when
// the storage notifies (PostgreSQL) or the poll finds it.
func (b *Bus[TTx]) PublishTx(ctx context.Context, tx TTx, topic string, payload any, opts ...PublishOption) error {
	return b.PublishBatchTx(ctx, tx, Outgoing{Topic: topic, Payload: payload, Options: opts})
}

// PublishBatchTx stores several messages in the caller's transaction.
func (b *Bus[TTx]) PublishBatchTx(ctx context.Context, tx TTx, msgs ...Outgoing) error {
	col, _ := ctx.Value(txKey{}).(*txCollector[TTx])
	inTx := col != nil && col.owns(tx) && b.disp.Running()
	recs, ms, spans, err := b.build(ctx, msgs, inTx)
	if err != nil {
		return err
	}
	if err := b.store.InsertPublishedTx(ctx, tx, recs); err != nil {
		err = fmt.Errorf("cap: publish: %w", err)
		endSpans(spans, err)
		return err
	}
	b.published(ctx, recs, spans)
	if inTx {
		col.add(recs, ms)
	}
	return nil
}

type txKey struct{}

// txCollector remembers what was published in an InTx transaction, to hand
// it to the dispatcher after the commit.
type txCollector[TTx any] struct {
	tx   TTx
	recs []*storage.Record
	msgs []*message.Message
}

// owns reports whether tx is the collector's transaction. A transaction
// type that cannot be compared is never matched (no hand-over, the poll
// finds the rows).
func (c *txCollector[TTx]) owns(tx TTx) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return any(c.tx) == any(tx)
}

func (c *txCollector[TTx]) add(recs []*storage.Record, msgs []*message.Message) {
	c.recs = append(c.recs, recs...)
	c.msgs = append(c.msgs, msgs...)
}

// InTx begins a transaction on the storage's database, runs fn in it and
// commits when fn returns nil (rolls back otherwise, or when fn panics).
// Messages published with PublishTx(ctx, tx, ...) inside fn, with the ctx
// fn received, are handed to the dispatcher right after the commit: no
// poll, no query to find them.
func (b *Bus[TTx]) InTx(ctx context.Context, fn func(ctx context.Context, tx TTx) error) (err error) {
	tx, err := b.store.Begin(ctx)
	if err != nil {
		return fmt.Errorf("cap: begin: %w", err)
	}
	col := &txCollector[TTx]{tx: tx}
	defer func() {
		if r := recover(); r != nil {
			_ = b.store.Rollback(context.WithoutCancel(ctx), tx)
			panic(r)
		}
	}()
	if err := fn(context.WithValue(ctx, txKey{}, col), tx); err != nil {
		if rerr := b.store.Rollback(context.WithoutCancel(ctx), tx); rerr != nil {
			return fmt.Errorf("%w (rollback: %v)", err, rerr)
		}
		return err
	}
	if err := b.store.Commit(ctx, tx); err != nil {
		return fmt.Errorf("cap: commit: %w", err)
	}
	b.afterCommit(ctx, col.recs, col.msgs, true)
	return nil
}

// afterCommit hands committed rows to the dispatcher, or wakes it for
// delayed ones.
func (b *Bus[TTx]) afterCommit(ctx context.Context, recs []*storage.Record, msgs []*message.Message, handover bool) {
	var now []*storage.Record
	var nowMsgs []*message.Message
	for i, r := range recs {
		if r.Status == storage.StatusDelayed {
			b.disp.WakeAt(r.DueIn)
			continue
		}
		now = append(now, r)
		nowMsgs = append(nowMsgs, msgs[i])
	}
	if handover && len(now) > 0 {
		b.disp.Handover(ctx, now, nowMsgs)
	}
}

// build makes the rows and messages of a publish. leased rows are stored
// leased to this instance, for a hand-over after the commit. When tracing
// is on, it starts each message's create span, which writes the trace
// context into the message's headers before they are stored.
func (b *Bus[TTx]) build(ctx context.Context, msgs []Outgoing, leased bool) ([]*storage.Record, []*message.Message, []telemetry.Span, error) {
	recs := make([]*storage.Record, 0, len(msgs))
	ms := make([]*message.Message, 0, len(msgs))
	var spans []telemetry.Span
	var trace func(name string, h message.Headers, size int)
	if b.tel.Tracing() {
		spans = make([]telemetry.Span, 0, len(msgs))
		trace = func(name string, h message.Headers, size int) {
			spans = append(spans, b.tel.StartCreate(ctx, name, h, size))
		}
	}
	for _, o := range msgs {
		var c publishConfig
		for _, opt := range o.Options {
			opt(&c)
		}
		rec, m, err := b.newMessage(o.Topic, o.Payload, &c, leased, trace)
		if err != nil {
			endSpans(spans, err)
			return nil, nil, nil, err
		}
		recs = append(recs, rec)
		ms = append(ms, m)
	}
	return recs, ms, spans, nil
}

// published ends the create spans of stored rows and counts them.
func (b *Bus[TTx]) published(ctx context.Context, recs []*storage.Record, spans []telemetry.Span) {
	endSpans(spans, nil)
	for _, r := range recs {
		b.tel.Published(ctx, r.Name, 1)
	}
}

func endSpans(spans []telemetry.Span, err error) {
	for _, s := range spans {
		s.End(err)
	}
}

// newMessage builds one message and its row; trace, when tracing, is
// called with its complete headers before they are encoded.
func (b *Bus[TTx]) newMessage(topic string, payload any, c *publishConfig, leased bool,
	trace func(name string, h message.Headers, size int)) (*storage.Record, *message.Message, error) {
	if topic == "" {
		return nil, nil, fmt.Errorf("%w: empty topic", ErrInvalidTopic)
	}
	name := b.opts.topicName(topic)
	body, err := b.encode(payload)
	if err != nil {
		return nil, nil, fmt.Errorf("cap: encode payload for %q: %w", name, err)
	}
	h := make(message.Headers, len(c.headers)+8)
	for k, v := range c.headers {
		h[k] = v
	}
	var rowID int64
	if c.id != "" {
		h[message.HeaderMessageID] = c.id
	} else if id := h[message.HeaderMessageID]; id == "" {
		rowID = b.ids.Next()
		h[message.HeaderMessageID] = strconv.FormatInt(rowID, 10)
	}
	if rowID == 0 {
		// A caller's id is the row id when it is a number, as in CAP.
		n, err := strconv.ParseInt(h[message.HeaderMessageID], 10, 64)
		if err != nil || n <= 0 {
			n = b.ids.Next()
		}
		rowID = n
	}
	switch {
	case c.corrID != "":
		h[message.HeaderCorrelationID] = c.corrID
		h[message.HeaderCorrelationSequence] = strconv.Itoa(c.corrSeq)
	case h[message.HeaderCorrelationID] == "":
		h[message.HeaderCorrelationID] = h[message.HeaderMessageID]
		h[message.HeaderCorrelationSequence] = "0"
	}
	if c.hasCB {
		h[message.HeaderCallbackName] = c.callback
	}
	h[message.HeaderMessageName] = name
	h[message.HeaderType] = typeName(payload)
	now := time.Now()
	delay := c.delay
	if !c.at.IsZero() {
		delay = c.at.Sub(now)
	}
	status := storage.StatusScheduled
	var dueIn time.Duration
	if delay > 0 {
		status = storage.StatusDelayed
		dueIn = delay
		h[message.HeaderDelayTime] = message.FormatDelay(delay)
		h[message.HeaderSentTime] = message.FormatSentTime(now.Add(delay))
	} else {
		h[message.HeaderSentTime] = message.FormatSentTime(now)
		if leased {
			dueIn = b.opts.Lease
		}
	}
	if trace != nil {
		trace(name, h, len(body))
	}
	m := &message.Message{Headers: h, Body: body}
	content, err := message.EncodeContent(m)
	if err != nil {
		return nil, nil, fmt.Errorf("cap: encode content for %q: %w", name, err)
	}
	rec := &storage.Record{ID: rowID, Version: b.opts.Version, Name: name, Content: content, Status: status, DueIn: dueIn}
	return rec, m, nil
}

func (b *Bus[TTx]) encode(payload any) ([]byte, error) {
	switch p := payload.(type) {
	case nil:
		return nil, nil
	case []byte:
		return p, nil
	case json.RawMessage:
		return p, nil
	}
	return b.opts.Serializer.Marshal(payload)
}

// typeName is the informational cap-msg-type: the payload's type name.
func typeName(v any) string {
	if v == nil {
		return "Object"
	}
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Name() != "" {
		return t.Name()
	}
	return t.Kind().String()
}
