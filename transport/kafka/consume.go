package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// Subscribe implements transport.Transport. It creates the plain topics
// among topics that do not exist (unless Config.DisableTopicCreation), lists
// the cluster's topics and starts a member of the consumer group named group
// on those that topics names or matches. It returns once the topics exist;
// the group is joined in the background. A new group reads each partition
// from its earliest offset, so messages sent after Subscribe returns reach
// the group even before it has joined.
//
// A consumer whose topics hold a wildcard, or name a topic that does not
// exist (with Config.DisableTopicCreation), lists the topics again every
// Config.TopicRefreshInterval and rejoins its group when the set changed.
func (t *Transport) Subscribe(ctx context.Context, group string, topics []string) (transport.Consumer, error) {
	if group == "" {
		return nil, errors.New("kafka: subscribe: empty group")
	}
	if len(topics) == 0 {
		return nil, errors.New("kafka: subscribe: no topics")
	}
	if t.isClosed() {
		return nil, fmt.Errorf("kafka: subscribe: %w", transport.ErrClosed)
	}
	var plain []string
	refresh := false
	for _, tp := range topics {
		if transport.IsWildcard(tp) {
			refresh = true
		} else {
			plain = append(plain, tp)
		}
	}
	if !t.cfg.DisableTopicCreation {
		if err := t.createTopics(ctx, plain); err != nil {
			return nil, fmt.Errorf("kafka: subscribe: %w", err)
		}
	}
	c := &consumer{
		t:        t,
		group:    group,
		patterns: slices.Clone(topics),
		refresh:  refresh,
		out:      make(chan *Delivery),
		wake:     make(chan struct{}, 1),
		closed:   make(chan struct{}),
		done:     make(chan struct{}),
	}
	names, missing, err := c.resolve(ctx)
	if err != nil {
		return nil, fmt.Errorf("kafka: subscribe: %w", err)
	}
	c.refresh = c.refresh || missing
	c.ctx, c.cancel = context.WithCancel(t.ctx)
	if !t.addConsumer(c) {
		c.cancel()
		return nil, fmt.Errorf("kafka: subscribe: %w", transport.ErrClosed)
	}
	go c.run(names)
	return c, nil
}

// consumer is one member of a consumer group.
type consumer struct {
	t        *Transport
	group    string
	patterns []string
	// refresh: the topic set can change (a wildcard, or a missing topic).
	refresh bool

	out chan *Delivery
	// again holds rejected deliveries to hand out again; wake signals one.
	mu    sync.Mutex
	again []*Delivery
	wake  chan struct{}

	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	closed    chan struct{}
	done      chan struct{} // run has returned
}

// resolve lists the cluster's topics and returns those the consumer's
// patterns name or match, sorted, and whether a plain topic is missing.
func (c *consumer) resolve(ctx context.Context) (names []string, missing bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.t.cfg.DialTimeout+c.t.cfg.ProduceTimeout)
	defer cancel()
	all, err := c.t.listTopics(ctx)
	if err != nil {
		return nil, false, err
	}
	set := make(map[string]bool)
	for _, p := range c.patterns {
		if !transport.IsWildcard(p) {
			if all[p] {
				set[p] = true
			} else {
				missing = true
			}
			continue
		}
		for name := range all {
			if transport.Match(p, name) {
				set[name] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(set)), missing, nil
}

// run joins the group with topics and rejoins whenever the topic set
// changes, until the consumer closes.
func (c *consumer) run(topics []string) {
	defer close(c.done)
	for c.ctx.Err() == nil {
		if len(topics) == 0 {
			// Nothing to consume yet: wait for a topic to appear.
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(c.t.cfg.TopicRefreshInterval):
			}
			topics = c.refreshed(topics)
			continue
		}
		topics = c.runGroup(topics)
	}
}

// refreshed returns the topics the patterns match now, or old when they
// cannot be listed.
func (c *consumer) refreshed(old []string) []string {
	names, _, err := c.resolve(c.ctx)
	if err != nil {
		if c.ctx.Err() == nil {
			c.t.log.Warn("kafka: listing topics failed", "group", c.group, "error", err)
		}
		return old
	}
	return names
}

// runGroup is a member of the group for topics until the consumer closes
// (it returns nil then) or the matching topics change (it returns them).
func (c *consumer) runGroup(topics []string) []string {
	cfg := &c.t.cfg
	log := c.t.log.With("group", c.group)
	cg, err := kafkago.NewConsumerGroup(kafkago.ConsumerGroupConfig{
		ID:                c.group,
		Brokers:           cfg.Brokers,
		Dialer:            c.t.dialer,
		Topics:            topics,
		HeartbeatInterval: cfg.HeartbeatInterval,
		SessionTimeout:    cfg.SessionTimeout,
		RebalanceTimeout:  cfg.RebalanceTimeout,
		JoinGroupBackoff:  cfg.RetryDelay,
		// Partitions added to a topic are picked up as well.
		WatchPartitionChanges:  true,
		PartitionWatchInterval: cfg.TopicRefreshInterval,
		StartOffset:            kafkago.FirstOffset,
		Timeout:                cfg.DialTimeout,
	})
	if err != nil {
		// Only an invalid configuration fails here; it cannot get better.
		log.Error("kafka: consumer group", "error", err)
		<-c.ctx.Done()
		return nil
	}
	gctx, stop := context.WithCancel(c.ctx)
	var next []string
	var refresher sync.WaitGroup
	if c.refresh {
		refresher.Add(1)
		go func() {
			defer refresher.Done()
			tick := time.NewTicker(cfg.TopicRefreshInterval)
			defer tick.Stop()
			for {
				select {
				case <-gctx.Done():
					return
				case <-tick.C:
				}
				now := c.refreshed(topics)
				if !slices.Equal(now, topics) {
					log.Info("kafka: topics changed; rejoining", "topics", now)
					next = now
					stop()
					return
				}
			}
		}()
	}
	for {
		gen, err := cg.Next(gctx)
		if err != nil {
			if gctx.Err() != nil || errors.Is(err, kafkago.ErrGroupClosed) {
				break
			}
			// Joins are retried after Config.RetryDelay; refused
			// credentials are an error an operator must fix.
			if isAuth(err) {
				log.Error("kafka: joining group failed; retrying", "error", wrap("join group", err))
			} else {
				log.Warn("kafka: joining group failed; retrying", "error", err)
			}
			continue
		}
		gen.Start(func(ctx context.Context) { c.runGeneration(ctx, gen) })
	}
	stop()
	// Close ends the generation (its final commit included) and leaves.
	_ = cg.Close()
	refresher.Wait()
	return next
}

// generation is the consumer's share of one group generation.
type generation struct {
	c   *consumer
	gen *kafkago.Generation

	mu    sync.Mutex
	ended bool
	parts map[partitionKey]*partition
}

type partitionKey struct {
	topic string
	id    int
}

// partition is the watermark of one assigned partition: the offsets
// delivered and not yet acked, in order, and the position to commit.
type partition struct {
	key partitionKey
	// pending holds the offsets delivered and not acked, ascending; acked
	// those of them acked out of order.
	pending []int64
	acked   map[int64]bool
	// next is the offset after the last delivered record; -1 before the
	// first delivery.
	next int64
	// committed is the last committed position, dirty whether the
	// position moved since.
	committed int64
	dirty     bool
}

// position returns the offset up to which the partition may be committed:
// the first delivery not yet acked, or the offset after the last delivery.
func (p *partition) position() int64 {
	if len(p.pending) > 0 {
		return p.pending[0]
	}
	return p.next
}

// runGeneration reads the generation's partitions and commits their
// watermarks until the generation ends, then commits once more.
func (c *consumer) runGeneration(ctx context.Context, gen *kafkago.Generation) {
	g := &generation{c: c, gen: gen, parts: make(map[partitionKey]*partition)}
	c.t.log.Debug("kafka: generation", "group", c.group, "generation", gen.ID, "assignments", gen.Assignments)
	defer c.t.log.Debug("kafka: generation ended", "group", c.group, "generation", gen.ID)
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for topic, assigned := range gen.Assignments {
		for _, a := range assigned {
			p := &partition{key: partitionKey{topic, a.ID}, acked: make(map[int64]bool), next: -1, committed: a.Offset}
			g.parts[p.key] = p
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.read(rctx, g, p, a.Offset)
			}()
		}
	}
	tick := time.NewTicker(c.t.cfg.CommitInterval)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
			g.commit(false)
			if h := c.t.afterCommitPass; h != nil {
				h()
			}
		}
	}
	cancel()
	wg.Wait()
	g.commit(true)
}

// commit commits the partitions whose watermark moved; final ends the
// generation, so that later acks are refused.
func (g *generation) commit(final bool) {
	g.mu.Lock()
	if g.ended {
		g.mu.Unlock()
		return
	}
	g.ended = final
	offsets := make(map[string]map[int]int64)
	var moved []*partition
	for _, p := range g.parts {
		if !p.dirty {
			continue
		}
		pos := p.position()
		if offsets[p.key.topic] == nil {
			offsets[p.key.topic] = make(map[int]int64)
		}
		offsets[p.key.topic][p.key.id] = pos
		p.dirty = false
		moved = append(moved, p)
	}
	g.mu.Unlock()
	if len(offsets) == 0 {
		return
	}
	if err := g.gen.CommitOffsets(offsets); err != nil {
		// Retried at the next tick; uncommitted acks are delivered again.
		g.c.t.log.Warn("kafka: offset commit failed", "group", g.c.group, "error", err)
		g.mu.Lock()
		for _, p := range moved {
			p.dirty = true
		}
		g.mu.Unlock()
		return
	}
	g.mu.Lock()
	for _, p := range moved {
		p.committed = offsets[p.key.topic][p.key.id]
	}
	g.mu.Unlock()
}

// track records offset as delivered; it reports false once the generation
// ended.
func (g *generation) track(p *partition, offset int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ended {
		return false
	}
	p.pending = append(p.pending, offset)
	p.next = offset + 1
	if len(p.pending) == 1 {
		// Offsets skipped by the broker (compaction, transaction markers)
		// move the position too.
		p.dirty = p.committed != offset
	}
	return true
}

// ack marks offset as acked and moves the watermark over the acked prefix.
func (g *generation) ack(p *partition, offset int64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ended {
		return fmt.Errorf("kafka: ack %s[%d]@%d: %w", p.key.topic, p.key.id, offset, ErrRevoked)
	}
	if len(p.pending) > 0 && p.pending[0] == offset {
		p.pending = p.pending[1:]
		for len(p.pending) > 0 && p.acked[p.pending[0]] {
			delete(p.acked, p.pending[0])
			p.pending = p.pending[1:]
		}
		p.dirty = true
		return nil
	}
	p.acked[offset] = true
	return nil
}

func (g *generation) isEnded() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ended
}

// read fetches one partition from offset and hands its records to Receive
// until ctx ends.
func (c *consumer) read(ctx context.Context, g *generation, p *partition, offset int64) {
	cfg := &c.t.cfg
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers:         cfg.Brokers,
		Topic:           p.key.topic,
		Partition:       p.key.id,
		Dialer:          c.t.dialer,
		MinBytes:        1,
		MaxBytes:        cfg.FetchMaxBytes,
		MaxWait:         cfg.FetchMaxWait,
		ReadLagInterval: -1,
		ReadBackoffMin:  cfg.RetryDelay / 10,
		ReadBackoffMax:  cfg.RetryDelay,
		ErrorLogger: kafkago.LoggerFunc(func(format string, args ...any) {
			c.t.log.Debug("kafka: reader: "+fmt.Sprintf(format, args...), "group", c.group)
		}),
	})
	defer r.Close()
	if err := r.SetOffset(offset); err != nil {
		c.t.log.Error("kafka: set offset", "group", c.group, "topic", p.key.topic, "partition", p.key.id, "error", err)
		return
	}
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.t.log.Warn("kafka: fetch failed", "group", c.group, "topic", p.key.topic,
				"partition", p.key.id, "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(cfg.RetryDelay):
			}
			continue
		}
		if !g.track(p, m.Offset) {
			return
		}
		d := newDelivery(c, g, p, m)
		select {
		case c.out <- d:
		case <-ctx.Done():
			return
		}
	}
}

// Receive implements transport.Consumer. Rejected deliveries come first.
func (c *consumer) Receive(ctx context.Context) (transport.Delivery, error) {
	for {
		select {
		case <-c.closed:
			return nil, fmt.Errorf("kafka: receive: %w", transport.ErrClosed)
		default:
		}
		if d := c.popAgain(); d != nil {
			if d.g.isEnded() {
				continue // its partition's new owner reads it again
			}
			return d, nil
		}
		select {
		case d := <-c.out:
			return d, nil
		case <-c.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.closed:
			return nil, fmt.Errorf("kafka: receive: %w", transport.ErrClosed)
		}
	}
}

func (c *consumer) popAgain() *Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.again) == 0 {
		return nil
	}
	d := c.again[0]
	c.again = c.again[1:]
	return d
}

func (c *consumer) pushAgain(d *Delivery) {
	c.mu.Lock()
	c.again = append(c.again, d)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Close implements transport.Consumer: it commits what the acks allow,
// leaves the group and unblocks Receive. Unacked deliveries are delivered
// again to the group. It is idempotent.
func (c *consumer) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.cancel()
	})
	<-c.done
	c.t.removeConsumer(c)
	return nil
}

// Delivery is one received record. Besides transport.Delivery it gives the
// record's key, partition and offset, for a transport.HeadersBuilder that
// handles messages of producers that do not speak CAP.
type Delivery struct {
	c       *consumer
	g       *generation
	p       *partition
	rec     kafkago.Message
	msg     *message.Message
	settled atomic.Bool
}

func newDelivery(c *consumer, g *generation, p *partition, rec kafkago.Message) *Delivery {
	return &Delivery{
		c:   c,
		g:   g,
		p:   p,
		rec: rec,
		msg: decodeRecord(rec),
	}
}

// Message implements transport.Delivery.
func (d *Delivery) Message() *message.Message { return d.msg }

// Topic implements transport.Delivery: the record's topic.
func (d *Delivery) Topic() string { return d.rec.Topic }

// Key returns the record's key (nil for a record without one).
func (d *Delivery) Key() []byte { return d.rec.Key }

// Partition returns the record's partition.
func (d *Delivery) Partition() int { return d.rec.Partition }

// Offset returns the record's offset in its partition.
func (d *Delivery) Offset() int64 { return d.rec.Offset }

// Time returns the record's timestamp.
func (d *Delivery) Time() time.Time { return d.rec.Time }

// errSettled reports a second Ack or Reject of one delivery.
var errSettled = errors.New("kafka: delivery already acked or rejected")

// Ack implements transport.Delivery: the offset is committed, in the next
// batch, once every earlier delivery of its partition is acked too. It
// fails with ErrRevoked when the partition was taken away meanwhile; the
// message is then delivered again.
func (d *Delivery) Ack(context.Context) error {
	if !d.settled.CompareAndSwap(false, true) {
		return errSettled
	}
	return d.g.ack(d.p, d.rec.Offset)
}

// Reject implements transport.Delivery: the partition's watermark stays
// below the message, and Receive hands it out again. If the partition is
// taken away first, its new owner receives it from the committed offset.
func (d *Delivery) Reject(context.Context) error {
	if !d.settled.CompareAndSwap(false, true) {
		return errSettled
	}
	if d.g.isEnded() {
		return nil
	}
	d.c.pushAgain(newDelivery(d.c, d.g, d.p, d.rec))
	return nil
}
