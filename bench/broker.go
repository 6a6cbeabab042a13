package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/memory"
)

// broker is the transport under test and what the baselines need of the
// same broker: raw sends and raw latency. A broker other than the in-memory
// one plugs in through a file of its own (broker_<name>.go) that calls
// registerTransport from an init function.
type broker struct {
	prefix string // private to this run: group prefix, topic prefix, exchange
	tr     transport.Transport
	raw    rawBroker // nil for the in-memory broker: the baselines use tr

	mu     sync.Mutex
	queues []string // groups bound by this run, removed by close

	stats *statTransport // with -stats: counts the bus's sends
}

// rawBroker is what a broker's file provides besides the transport: the
// baselines through the broker's own client, and the clean-up.
type rawBroker interface {
	// rawSend is the burn-down baseline: it sends msgs to the broker as
	// fast as the broker's own client can (batched or with asynchronous
	// acknowledgements, as that broker is best used) and returns once the
	// broker has accepted them all. Messages go to the topic in their
	// cap-msg-name header, in the transport's wire format.
	rawSend(ctx context.Context, msgs []*message.Message) error
	// rawLatency is the latency baseline: it subscribes a consumer of its
	// own to topic with the broker's client, then calls send at the pace
	// the probe sets; send publishes p.stamp() with the broker's client.
	// Each received message's headers go to p.received. It returns when
	// p.run returns and every sent message arrived (or 5 s passed).
	rawLatency(ctx context.Context, p *latencyProbe, topic, group string) error
	// purge empties the group's queue (bound to topic) between phases;
	// errPurgeByReceiving makes the harness drain it through the transport.
	purge(ctx context.Context, group, topic string) error
	// close removes what the run declared on the broker: groups holds every
	// group bound (the bus's names); the rest the broker side knows by the
	// prefix it was opened with.
	close(groups []string)
}

// errPurgeByReceiving: the broker has no purge; drain through the transport.
var errPurgeByReceiving = errors.New("purge by receiving")

// transportKind opens a broker for a run: the transport the bus uses and
// the raw side. prefix is private to the run (the bus's group and topic
// prefix).
type transportKind func(ctx context.Context, cfg *config, prefix string) (transport.Transport, rawBroker, error)

var transportKinds = map[string]transportKind{
	"memory": func(context.Context, *config, string) (transport.Transport, rawBroker, error) {
		return memory.New(), nil, nil
	},
}

// registerTransport makes -transport name available; called from init.
func registerTransport(name string, open transportKind) {
	transportKinds[name] = open
	if !slices.Contains(transports, name) {
		transports = append(transports, name)
		slices.Sort(transports)
	}
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
	open, ok := transportKinds[cfg.transport]
	if !ok {
		return nil, fmt.Errorf("unknown transport %q", cfg.transport)
	}
	b := &broker{prefix: newName("capbench.")}
	tr, raw, err := open(ctx, cfg, b.prefix)
	if err != nil {
		return nil, err
	}
	b.tr, b.raw = tr, raw
	return b, nil
}

// group returns the name the bus gives group, with the run's prefix and
// the default version: the queue's name on RabbitMQ.
func (b *broker) group(name string) string { return b.prefix + "." + name + ".v1" }

// addQueue remembers a group to remove at the end of the run.
func (b *broker) addQueue(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Contains(b.queues, name) {
		b.queues = append(b.queues, name)
	}
}

// sink binds a group with no consumer to topic, so that every message sent
// is stored by the broker as it would be for a real subscriber. It returns
// the group's name.
func (b *broker) sink(ctx context.Context, name, topic string) (string, error) {
	q := b.group(name)
	b.addQueue(q)
	c, err := b.tr.Subscribe(ctx, q, []string{topic})
	if err != nil {
		return "", fmt.Errorf("bind %s: %w", q, err)
	}
	return q, c.Close() // the group and its binding stay
}

// purge empties a group's queue between phases.
func (b *broker) purge(ctx context.Context, queue, topic string) error {
	if b.raw != nil {
		if err := b.raw.purge(ctx, queue, topic); !errors.Is(err, errPurgeByReceiving) {
			return err
		}
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

// close closes the transport and removes what the run declared.
func (b *broker) close() {
	_ = b.tr.Close()
	if b.raw != nil {
		b.mu.Lock()
		queues := slices.Clone(b.queues)
		b.mu.Unlock()
		b.raw.close(queues)
	}
}

// rawSend is the burn-down baseline: the broker's own client where the
// broker has a file of its own; on the in-memory broker SendBatch with
// batches of 100.
func (b *broker) rawSend(ctx context.Context, msgs []*message.Message) error {
	if b.raw != nil {
		return b.raw.rawSend(ctx, msgs)
	}
	for i := 0; i < len(msgs); i += 100 {
		if errs := b.tr.SendBatch(ctx, msgs[i:min(i+100, len(msgs))]); errs != nil {
			return errors.Join(errs...)
		}
	}
	return nil
}

// latencyProbe stamps the baseline's messages with their send time and
// records the latency of those received.
type latencyProbe struct {
	h     *histogram
	sent  atomic.Int64
	epoch time.Time
	body  []byte
	topic string
	rate  int
	d     time.Duration
}

// stamp returns the next message to send, stamped with the time.
func (p *latencyProbe) stamp() *message.Message {
	n := p.sent.Add(1)
	return &message.Message{Headers: message.Headers{
		message.HeaderMessageID:   strconv.FormatInt(n, 10),
		message.HeaderMessageName: p.topic,
		"bench-sent":              strconv.FormatInt(int64(time.Since(p.epoch)), 10),
	}, Body: p.body}
}

// received records the latency of a message with these headers.
func (p *latencyProbe) received(hs map[string]string) {
	if v, err := strconv.ParseInt(hs["bench-sent"], 10, 64); err == nil {
		p.h.record(time.Since(p.epoch) - time.Duration(v))
	}
}

// run calls send at the probe's rate for its duration, then waits up to
// 5 s for every sent message to be received.
func (p *latencyProbe) run(ctx context.Context, send func(ctx context.Context) error) error {
	err := pace(ctx, p.rate, p.d, 1, send)
	waitFor(ctx, 5*time.Second, func() bool { return p.h.count() >= p.sent.Load() })
	return err
}

// rawLatency is the latency baseline: messages of size bytes sent at rate
// for d straight to the broker and received by one consumer, which acks
// each. It measures from the start of the send to the receive.
func (b *broker) rawLatency(ctx context.Context, rate int, d time.Duration, size int) (*histogram, error) {
	topic := "bench.rawlatency"
	p := &latencyProbe{h: &histogram{}, epoch: time.Now(), body: make([]byte, size), topic: topic, rate: rate, d: d}
	for i := range p.body {
		p.body[i] = 'x'
	}
	q := b.group("rawlatency")
	b.addQueue(q)
	if b.raw != nil {
		return p.h, b.raw.rawLatency(ctx, p, topic, q)
	}
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
			p.received(dl.Message().Headers)
			_ = dl.Ack(ctx)
		}
	}()
	err = p.run(ctx, func(ctx context.Context) error { return b.tr.Send(ctx, p.stamp()) })
	_ = c.Close()
	<-done
	return p.h, err
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
