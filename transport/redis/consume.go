package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// releaseIdle is the idle time XCLAIM ... IDLE gives an entry a consumer
// gives back (Reject, Close): far beyond any ClaimIdle, so that the next
// XAUTOCLAIM of any consumer of the group takes it.
const releaseIdle = 10 * 365 * 24 * time.Hour

// DeadConsumerIdle is how long a consumer name with no pending entries
// must have been idle before the other consumers of its group delete it
// (XGROUP DELCONSUMER). Every consumer gets a name of its own, so the names
// of stopped and crashed instances would otherwise pile up in the group.
// A live consumer reads at least every Config.Block, so it is never that
// idle; a deleted one would be created again by its next read.
const DeadConsumerIdle = time.Hour

// deleteDeadConsumers deletes, atomically with the check, the consumers of
// a group that have no pending entries and have been idle longer than
// ARGV[2] milliseconds, except ARGV[3].
var deleteDeadConsumers = goredis.NewScript(`
local cs = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
local n = 0
for _, c in ipairs(cs) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) and f['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n`)

// Subscribe implements transport.Transport. For every topic without
// wildcards it creates the group on the stream of that name (XGROUP CREATE
// ... $ MKSTREAM, an existing group is kept). Topics with CAP's wildcards
// are resolved against the stream keys that exist (SCAN ... MATCH ... TYPE
// stream, filtered with transport.Match), at once and then every
// Config.WildcardRefresh; on a stream found later the group is created at
// the time of the Subscribe call, so that it gets every entry added since.
//
// The consumer reads with XREADGROUP ... COUNT ReadCount BLOCK Block under
// a name of its own and takes over entries that other consumers of the
// group left pending longer than Config.ClaimIdle (XAUTOCLAIM).
func (t *Transport) Subscribe(ctx context.Context, group string, topics []string) (transport.Consumer, error) {
	if group == "" {
		return nil, errors.New("redis: subscribe: empty group")
	}
	if len(topics) == 0 {
		return nil, errors.New("redis: subscribe: no topics")
	}
	if t.isClosed() {
		return nil, fmt.Errorf("redis: subscribe: %w", transport.ErrClosed)
	}
	c := &consumer{
		t:        t,
		group:    group,
		name:     t.consumerName(),
		streams:  map[string]bool{},
		out:      make(chan *Delivery),
		claimNow: make(chan struct{}, 1),
		closed:   make(chan struct{}),
	}
	for _, topic := range topics {
		if transport.IsWildcard(topic) {
			c.patterns = append(c.patterns, topic)
		} else if !slices.Contains(c.exact, topic) {
			c.exact = append(c.exact, topic)
		}
	}
	for _, topic := range c.exact {
		if err := c.createGroup(ctx, topic, "$", true); err != nil {
			return nil, err
		}
		c.streams[topic] = true
	}
	if len(c.patterns) > 0 {
		now, err := t.rdb.Time(ctx).Result()
		if err != nil {
			return nil, t.wrap("time", err)
		}
		c.startID = strconv.FormatInt(now.UnixMilli(), 10) + "-0"
		if err := c.refresh(ctx); err != nil {
			return nil, err
		}
	}
	ropts := *t.opts
	ropts.PoolSize, ropts.MinIdleConns, ropts.MaxIdleConns = 1, 0, 1
	c.reader = goredis.NewClient(&ropts)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if !t.addConsumer(c) {
		c.cancel()
		_ = c.reader.Close()
		return nil, fmt.Errorf("redis: subscribe: %w", transport.ErrClosed)
	}
	c.wg.Add(2)
	go c.readLoop()
	go c.maintain()
	return c, nil
}

// consumer reads the streams of one group under a name of its own.
type consumer struct {
	t        *Transport
	group    string
	name     string
	exact    []string
	patterns []string
	startID  string // where groups on streams found by a wildcard start

	mu      sync.Mutex
	streams map[string]bool // stream keys read

	reader   *goredis.Client // one connection, for the blocking reads
	out      chan *Delivery
	claimNow chan struct{}

	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
}

// createGroup creates the group on stream, keeping an existing one.
func (c *consumer) createGroup(ctx context.Context, stream, start string, mkstream bool) error {
	var err error
	if mkstream {
		err = c.t.rdb.XGroupCreateMkStream(ctx, stream, c.group, start).Err()
	} else {
		err = c.t.rdb.XGroupCreate(ctx, stream, c.group, start).Err()
	}
	if err != nil && !goredis.HasErrorPrefix(err, "BUSYGROUP") {
		return c.t.wrap("xgroup create "+stream+" "+c.group, err)
	}
	return nil
}

// keys returns the stream keys the consumer reads, sorted.
func (c *consumer) keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.streams))
	for k := range c.streams {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// refresh scans for stream keys matching the wildcard topics and creates
// the group on the new ones.
func (c *consumer) refresh(ctx context.Context) error {
	for _, p := range c.patterns {
		var cursor uint64
		for {
			keys, next, err := c.t.rdb.ScanType(ctx, cursor, glob(p), 1000, "stream").Result()
			if err != nil {
				return c.t.wrap("scan "+glob(p), err)
			}
			for _, k := range keys {
				if !transport.Match(p, k) {
					continue
				}
				c.mu.Lock()
				known := c.streams[k]
				c.mu.Unlock()
				if known {
					continue
				}
				if err := c.createGroup(ctx, k, c.startID, false); err != nil {
					if goredis.HasErrorPrefix(errors.Unwrap(err), "ERR") && strings.Contains(err.Error(), "key to exist") {
						continue // deleted since the scan
					}
					return err
				}
				c.mu.Lock()
				c.streams[k] = true
				c.mu.Unlock()
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	return nil
}

// glob turns a topic with CAP's wildcards into a SCAN pattern that matches
// at least the keys the topic matches: each * or # word becomes *, other
// words are escaped.
func glob(topic string) string {
	words := strings.Split(topic, ".")
	for i, w := range words {
		if w == "*" || w == "#" {
			words[i] = "*"
			continue
		}
		var b strings.Builder
		for _, r := range w {
			if strings.ContainsRune(`*?[]\`, r) {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		words[i] = b.String()
	}
	return strings.Join(words, ".")
}

// ensureGroups creates the group again on every stream, after Redis lost
// it (a restart without persistence, a deleted stream). A stream found by a
// wildcard that no longer exists is dropped.
func (c *consumer) ensureGroups(ctx context.Context) error {
	for _, k := range c.keys() {
		exact := slices.Contains(c.exact, k)
		start := "$"
		if !exact {
			start = c.startID
		}
		if err := c.createGroup(ctx, k, start, exact); err != nil {
			if !exact && strings.Contains(err.Error(), "key to exist") {
				c.mu.Lock()
				delete(c.streams, k)
				c.mu.Unlock()
				continue
			}
			return err
		}
	}
	return nil
}

// readLoop reads new entries and hands them to Receive. After a failed
// read it pauses, growing the pause up to Config.MaxReconnectDelay, and
// creates the groups again when Redis reports them missing.
func (c *consumer) readLoop() {
	defer c.wg.Done()
	cfg := &c.t.cfg
	log := c.t.log.With("group", c.group, "consumer", c.name)
	delay := cfg.ReconnectDelay
	failing := false
	for {
		keys := c.keys()
		if len(keys) == 0 { // wildcards that match no stream yet
			select {
			case <-time.After(cfg.Block):
				continue
			case <-c.closed:
				return
			}
		}
		streams := make([]string, 0, 2*len(keys))
		streams = append(streams, keys...)
		for range keys {
			streams = append(streams, ">")
		}
		res, err := c.reader.XReadGroup(c.ctx, &goredis.XReadGroupArgs{
			Group: c.group, Consumer: c.name, Streams: streams, Count: int64(cfg.ReadCount), Block: cfg.Block,
		}).Result()
		if c.isClosed() {
			return
		}
		if err != nil && !errors.Is(err, goredis.Nil) {
			if goredis.HasErrorPrefix(err, "NOGROUP") {
				log.Warn("redis: group missing, creating it again", "error", err)
				err = c.ensureGroups(c.ctx)
			}
			if err != nil {
				failing = true
				log.Warn("redis: read failed", "error", err, "retry_in", delay)
				select {
				case <-time.After(delay):
				case <-c.closed:
					return
				}
				delay = min(delay*2, cfg.MaxReconnectDelay)
				continue
			}
		}
		if failing {
			failing = false
			delay = cfg.ReconnectDelay
			log.Info("redis: reading again")
			c.nudge() // entries delivered before the failure may wait unacknowledged
		}
		for _, s := range res {
			for _, m := range s.Messages {
				if !c.deliver(s.Stream, m) {
					return
				}
			}
		}
	}
}

// deliver hands one entry to Receive; it reports false once the consumer
// is closed.
func (c *consumer) deliver(stream string, m goredis.XMessage) bool {
	d := &Delivery{c: c, stream: stream, raw: m}
	d.msg, d.err = decodeEntry(m.ID, m.Values)
	if d.err != nil {
		c.t.log.Warn("redis: malformed entry delivered without CAP headers", "stream", stream,
			"group", c.group, "error", d.err)
	}
	select {
	case c.out <- d:
		return true
	case <-c.closed:
		return false
	}
}

// maintain takes over entries pending too long, rescans wildcards and
// deletes dead consumer names.
func (c *consumer) maintain() {
	defer c.wg.Done()
	cfg := &c.t.cfg
	claim := time.NewTicker(cfg.ClaimInterval)
	defer claim.Stop()
	var refresh <-chan time.Time
	if len(c.patterns) > 0 {
		tk := time.NewTicker(cfg.WildcardRefresh)
		defer tk.Stop()
		refresh = tk.C
	}
	lastCleanup := time.Time{}
	c.nudge() // entries a closed or crashed consumer left
	for {
		select {
		case <-c.closed:
			return
		case <-refresh:
			if err := c.refresh(c.ctx); err != nil && !c.isClosed() {
				c.t.log.Warn("redis: wildcard refresh failed", "group", c.group, "error", err)
			}
			continue
		case <-claim.C:
		case <-c.claimNow:
		}
		if !c.claim() {
			return
		}
		if time.Since(lastCleanup) > DeadConsumerIdle/4 {
			lastCleanup = time.Now()
			for _, k := range c.keys() {
				_ = deleteDeadConsumers.Run(c.ctx, c.t.rdb, []string{k}, c.group,
					DeadConsumerIdle.Milliseconds(), c.name).Err()
			}
		}
	}
}

// claim takes over the entries of every stream pending longer than
// ClaimIdle and delivers them; it reports false once the consumer is
// closed.
func (c *consumer) claim() bool {
	cfg := &c.t.cfg
	for _, k := range c.keys() {
		start := "0-0"
		for range 100 { // bounded: the next round goes on
			msgs, next, err := c.t.rdb.XAutoClaim(c.ctx, &goredis.XAutoClaimArgs{
				Stream: k, Group: c.group, Consumer: c.name, MinIdle: cfg.ClaimIdle,
				Start: start, Count: int64(cfg.ReadCount),
			}).Result()
			if err != nil {
				if !c.isClosed() && !goredis.HasErrorPrefix(err, "NOGROUP") {
					c.t.log.Warn("redis: xautoclaim failed", "stream", k, "group", c.group, "error", err)
				}
				break
			}
			for _, m := range msgs {
				if m.Values == nil {
					continue // deleted from the stream meanwhile
				}
				if !c.deliver(k, m) {
					return false
				}
			}
			if next == "0-0" || next == "" {
				break
			}
			start = next
		}
	}
	return !c.isClosed()
}

func (c *consumer) nudge() {
	select {
	case c.claimNow <- struct{}{}:
	default:
	}
}

func (c *consumer) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
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

// Close implements transport.Consumer: it stops reading and marks the
// entries delivered to it and not acknowledged as idle, so that the next
// XAUTOCLAIM of another consumer of the group takes them at once. The
// group stays, and keeps collecting entries.
func (c *consumer) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.cancel()
		_ = c.reader.Close() // ends a blocked XREADGROUP
		c.wg.Wait()
		// Transport.Close closes its consumers before the client.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c.release(ctx)
		cancel()
		c.t.removeConsumer(c)
		c.t.nudgeGroup(c.group) // the consumers of the group here claim at once
	})
	return nil
}

// release marks the consumer's pending entries idle for others to claim.
func (c *consumer) release(ctx context.Context) {
	for _, k := range c.keys() {
		for {
			pend, err := c.t.rdb.XPendingExt(ctx, &goredis.XPendingExtArgs{
				Stream: k, Group: c.group, Start: "-", End: "+", Count: 1000, Consumer: c.name,
			}).Result()
			if err != nil || len(pend) == 0 {
				break
			}
			ids := make([]string, len(pend))
			for i, p := range pend {
				ids[i] = p.ID
			}
			if err := c.giveBack(ctx, k, ids...); err != nil {
				c.t.log.Warn("redis: releasing pending entries failed; they return after ClaimIdle",
					"stream", k, "group", c.group, "error", err)
				break
			}
			if len(pend) < 1000 {
				break
			}
		}
	}
}

// giveBack marks entries of the consumer as idle long enough for any
// consumer's next XAUTOCLAIM (XCLAIM ... IDLE ... JUSTID, which keeps
// their delivery count).
func (c *consumer) giveBack(ctx context.Context, stream string, ids ...string) error {
	args := []any{"XCLAIM", stream, c.group, c.name, 0}
	for _, id := range ids {
		args = append(args, id)
	}
	args = append(args, "IDLE", releaseIdle.Milliseconds(), "JUSTID")
	return c.t.rdb.Do(ctx, args...).Err()
}

// Delivery is an entry read from a stream. It implements
// transport.Delivery; Raw gives the entry, for example to a
// transport.HeadersBuilder that reads its other fields.
type Delivery struct {
	c      *consumer
	stream string
	raw    goredis.XMessage
	msg    *message.Message
	err    error
	done   atomic.Bool
}

// Message implements transport.Delivery.
func (d *Delivery) Message() *message.Message { return d.msg }

// Topic implements transport.Delivery: the stream key.
func (d *Delivery) Topic() string { return d.stream }

// Raw returns the entry: its id and fields.
func (d *Delivery) Raw() goredis.XMessage { return d.raw }

// Err returns why the entry could not be decoded (wrapping ErrMalformed),
// or nil. A malformed entry's message holds HeaderError, HeaderEntryID,
// HeaderRawHeaders and the raw body field.
func (d *Delivery) Err() error { return d.err }

// Ack implements transport.Delivery: XACK.
func (d *Delivery) Ack(ctx context.Context) error {
	if err := d.settle(ctx); err != nil {
		return err
	}
	return d.c.t.wrap("xack", d.c.t.rdb.XAck(ctx, d.stream, d.c.group, d.raw.ID).Err())
}

// Reject implements transport.Delivery: the entry stays pending but is
// marked idle, so that the group's next XAUTOCLAIM (this consumer's, which
// Reject triggers, or another's) delivers it again. CAP leaves a rejected
// entry pending until the instance restarts.
func (d *Delivery) Reject(ctx context.Context) error {
	if err := d.settle(ctx); err != nil {
		return err
	}
	if err := d.c.giveBack(ctx, d.stream, d.raw.ID); err != nil {
		return d.c.t.wrap("reject", err)
	}
	d.c.nudge()
	return nil
}

var errSettled = errors.New("redis: delivery already acknowledged or rejected")

func (d *Delivery) settle(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.done.Swap(true) {
		return errSettled
	}
	return nil
}
