package nats

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// Subscribe implements transport.Transport. For each topic it makes sure
// the stream named after the topic's first word captures the topic's
// subject (creating the stream, or extending its subject list), then
// creates or updates CAP's durable pull consumer of the group for that
// topic (explicit ack, Config.AckWait, deliver-new for a new consumer) and
// starts pulling. It returns once every consumer exists: a message sent
// afterwards reaches the group, and the durable consumers keep collecting
// the group's messages while no instance is consuming.
//
// NATS's wildcards are wider than CAP's (its * is any word, CAP's one of
// [0-9a-zA-Z]+; CAP's # before the last word has no NATS equivalent and is
// subscribed as '>' from there): a delivery a consumer's subject matches
// but its topic does not by CAP's rule (transport.Match) is acknowledged and
// dropped. Like CAP, each topic has its own durable consumer, so a group
// subscribed to two topics that both match a subject gets such a message
// twice (and the bus handles it once).
func (t *Transport) Subscribe(ctx context.Context, group string, topics []string) (transport.Consumer, error) {
	if group == "" {
		return nil, errors.New("nats: subscribe: empty group")
	}
	if len(topics) == 0 {
		return nil, errors.New("nats: subscribe: no topics")
	}
	if err := t.ready("subscribe"); err != nil {
		return nil, err
	}
	var bindings []binding
	streams := map[string][]string{}
	seen := map[string]bool{}
	for _, topic := range topics {
		b, err := bind(group, topic)
		if err != nil {
			return nil, fmt.Errorf("nats: subscribe: %w", err)
		}
		if seen[b.durable] {
			continue
		}
		seen[b.durable] = true
		bindings = append(bindings, b)
		streams[b.stream] = append(streams[b.stream], b.subject)
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.RequestTimeout)
	defer cancel()
	for _, stream := range slices.Sorted(maps.Keys(streams)) {
		if err := t.ensureStream(ctx, stream, streams[stream]); err != nil {
			return nil, err
		}
	}
	c := &consumer{
		t:      t,
		group:  group,
		out:    make(chan *Delivery),
		slots:  make(chan struct{}, t.cfg.MaxInFlight),
		held:   make(map[*Delivery]struct{}),
		closed: make(chan struct{}),
	}
	jcs := make([]jetstream.Consumer, len(bindings))
	for i, b := range bindings {
		jc, err := t.createConsumer(ctx, b)
		if err != nil {
			return nil, err
		}
		jcs[i] = jc
	}
	if !t.addConsumer(c) {
		return nil, fmt.Errorf("nats: subscribe: %w", transport.ErrClosed)
	}
	for i, b := range bindings {
		c.wg.Add(1)
		go c.run(b, jcs[i])
	}
	return c, nil
}

// createConsumer creates or updates the durable consumer of a binding.
func (t *Transport) createConsumer(ctx context.Context, b binding) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckWait:       t.cfg.AckWait,
	}
	if t.cfg.ConsumerConfig != nil {
		t.cfg.ConsumerConfig(&cfg)
	}
	cfg.Name, cfg.Durable = "", b.durable
	cfg.FilterSubject, cfg.FilterSubjects = b.subject, nil
	cfg.AckPolicy = jetstream.AckExplicitPolicy
	cfg.DeliverSubject, cfg.DeliverGroup = "", ""
	jc, err := t.js.CreateOrUpdateConsumer(ctx, b.stream, cfg)
	if err == nil {
		return jc, nil
	}
	err = t.classify(ctx, "create consumer "+b.durable+" on stream "+b.stream, err)
	if errors.Is(err, transport.ErrUnavailable) || errors.Is(err, transport.ErrClosed) || ctx.Err() != nil {
		return nil, err
	}
	// An existing consumer whose config cannot be updated to ours (another
	// version of the service set a field that cannot change) is used as it
	// is, if it is a pull consumer of the same subject.
	existing, lookErr := t.js.Consumer(ctx, b.stream, b.durable)
	if lookErr != nil {
		return nil, err
	}
	info := existing.CachedInfo().Config
	if info.DeliverSubject != "" || info.FilterSubject != b.subject || info.AckPolicy != jetstream.AckExplicitPolicy {
		return nil, fmt.Errorf("%w (the existing consumer is not an explicit-ack pull consumer of subject %q)", err, b.subject)
	}
	t.log.Warn("nats: using the existing consumer as it is", "stream", b.stream, "consumer", b.durable, "error", err)
	return existing, nil
}

// consumer receives the messages of one group on its topics.
type consumer struct {
	t     *Transport
	group string

	out   chan *Delivery
	slots chan struct{} // one per delivery held: bounds the deliveries in flight

	mu        sync.Mutex
	held      map[*Delivery]struct{}
	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
}

// run pulls the messages of one binding until the consumer closes. When the
// library stops consuming (the consumer or its stream was deleted, for
// example by a restart of a server whose streams are in memory), it
// creates the stream and the consumer again and resumes.
func (c *consumer) run(b binding, jc jetstream.Consumer) {
	defer c.wg.Done()
	log := c.t.log.With("group", c.group, "topic", b.topic)
	delay := c.t.cfg.ReconnectWait
	for {
		if jc != nil {
			if !c.consume(b, jc, log) {
				return
			}
			jc = nil
		}
		select {
		case <-c.closed:
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
		if !c.t.nc.IsConnected() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.t.cfg.RequestTimeout)
		err := c.t.ensureStream(ctx, b.stream, []string{b.subject})
		if err == nil {
			jc, err = c.t.createConsumer(ctx, b)
		}
		cancel()
		if err != nil {
			log.Warn("nats: resubscribe failed", "error", err)
			continue
		}
		delay = c.t.cfg.ReconnectWait
		log.Info("nats: consumer resumed")
	}
}

// consume runs one Consume of jc. It returns false when the consumer
// closed, true when consuming stopped and must start again.
func (c *consumer) consume(b binding, jc jetstream.Consumer, log interface {
	Warn(string, ...any)
	Debug(string, ...any)
}) bool {
	restart := make(chan struct{}, 1)
	cc, err := jc.Consume(func(m jetstream.Msg) { c.handle(b, m) },
		jetstream.PullMaxMessages(c.t.cfg.MaxInFlight),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			switch {
			case errors.Is(err, jetstream.ErrConsumerDeleted),
				errors.Is(err, jetstream.ErrConsumerNotFound),
				errors.Is(err, jetstream.ErrStreamNotFound),
				errors.Is(err, nats.ErrNoResponders):
				log.Warn("nats: consumer gone, subscribing again", "error", err)
				select {
				case restart <- struct{}{}:
				default:
				}
			default:
				log.Debug("nats: consume", "error", err)
			}
		}))
	if err != nil {
		log.Warn("nats: consume failed", "error", err)
		return true
	}
	select {
	case <-c.closed:
		// Buffered messages pass through handle, which naks them now.
		cc.Drain()
		select {
		case <-cc.Closed():
		case <-time.After(2 * time.Second):
			cc.Stop()
		}
		return false
	case <-restart:
		cc.Stop()
		return true
	case <-cc.Closed():
		select {
		case <-c.closed:
			return false
		default:
			return true
		}
	}
}

// handle passes one message to Receive once a slot is free.
func (c *consumer) handle(b binding, m jetstream.Msg) {
	if b.filter && !transport.Match(b.topic, m.Subject()) {
		// Matched by NATS's wider wildcards only.
		c.t.log.Debug("nats: dropping a message the topic does not match by CAP's rule",
			"group", c.group, "topic", b.topic, "subject", m.Subject())
		_ = m.Ack()
		return
	}
	select {
	case c.slots <- struct{}{}:
	case <-c.closed:
		_ = m.Nak()
		return
	}
	d := newDelivery(c, m)
	c.mu.Lock()
	c.held[d] = struct{}{}
	c.mu.Unlock()
	select {
	case c.out <- d:
	case <-c.closed:
		if d.release() {
			_ = m.Nak()
		}
	}
}

// Receive implements transport.Consumer.
func (c *consumer) Receive(ctx context.Context) (transport.Delivery, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case d := <-c.out:
		return d, nil
	case <-c.closed:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close implements transport.Consumer: it stops pulling and negatively
// acknowledges every delivery not yet acknowledged or rejected, buffered or
// handed out, so they return to the group at once rather than after the ack
// wait. The durable consumers stay and keep collecting the group's
// messages.
func (c *consumer) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.wg.Wait()
		c.mu.Lock()
		held := slices.Collect(maps.Keys(c.held))
		c.mu.Unlock()
		for _, d := range held {
			if d.release() {
				_ = d.raw.Nak()
			}
		}
		c.t.removeConsumer(c)
	})
	return nil
}

// Delivery is a message received from JetStream. It implements
// transport.Delivery; Raw gives the JetStream message, for example to a
// transport.HeadersBuilder that reads its metadata.
type Delivery struct {
	c    *consumer
	raw  jetstream.Msg
	msg  *message.Message
	done atomic.Bool
}

func newDelivery(c *consumer, m jetstream.Msg) *Delivery {
	return &Delivery{c: c, raw: m, msg: &message.Message{Headers: fromHeader(m.Headers()), Body: m.Data()}}
}

// fromHeader returns the headers of a NATS message; a header given several
// times keeps its first value.
func fromHeader(h nats.Header) message.Headers {
	out := make(message.Headers, len(h)+2)
	for k, vs := range h {
		if len(vs) > 0 {
			out[k] = vs[0]
		} else {
			out[k] = ""
		}
	}
	return out
}

// release settles d once: it frees its slot and reports whether this call
// settled it.
func (d *Delivery) release() bool {
	if d.done.Swap(true) {
		return false
	}
	d.c.mu.Lock()
	delete(d.c.held, d)
	d.c.mu.Unlock()
	<-d.c.slots
	return true
}

// Message implements transport.Delivery.
func (d *Delivery) Message() *message.Message { return d.msg }

// Topic implements transport.Delivery: the message's subject.
func (d *Delivery) Topic() string { return d.raw.Subject() }

// Raw returns the JetStream message. Acknowledge it through Ack and Reject
// only.
func (d *Delivery) Raw() jetstream.Msg { return d.raw }

// errSettled: a second Ack or Reject, or one after the consumer closed
// (which returned the delivery to the group).
var errSettled = errors.New("nats: delivery already acknowledged, rejected or returned by Close")

// Ack implements transport.Delivery (JetStream's Ack). It fails with an
// error wrapping transport.ErrUnavailable while the connection is down;
// the message is then delivered again after the ack wait.
func (d *Delivery) Ack(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !d.release() {
		return errSettled
	}
	return d.c.t.classify(ctx, "ack", d.raw.Ack())
}

// Reject implements transport.Delivery: a Nak, delayed by Config.NakDelay
// when it is set, so that JetStream delivers the message again.
func (d *Delivery) Reject(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !d.release() {
		return errSettled
	}
	if delay := d.c.t.cfg.NakDelay; delay > 0 {
		return d.c.t.classify(ctx, "nak", d.raw.NakWithDelay(delay))
	}
	return d.c.t.classify(ctx, "nak", d.raw.Nak())
}
