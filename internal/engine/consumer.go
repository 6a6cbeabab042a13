package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/transport"
)

// Consumers receives the messages of every group from the transport, stores
// them in the Received table (a duplicate of (cap-msg-id, group) is acked
// and dropped), acks them and passes them to the Executor.
type Consumers[TTx any] struct {
	cfg  *Config[TTx]
	reg  *Registry[TTx]
	exec *Executor[TTx]

	mu    sync.Mutex
	conns []transport.Consumer
	wg    sync.WaitGroup
}

// NewConsumers returns the consumer side of the bus.
func NewConsumers[TTx any](cfg *Config[TTx], reg *Registry[TTx], exec *Executor[TTx]) *Consumers[TTx] {
	return &Consumers[TTx]{cfg: cfg, reg: reg, exec: exec}
}

// Start subscribes every group (Config.Consumers clients each) and starts
// their receive loops, which end with ctx or Stop. When Start returns, every
// group is bound on the broker.
func (c *Consumers[TTx]) Start(ctx context.Context) error {
	for _, g := range c.reg.Groups() {
		topics := c.reg.Topics(g)
		for range c.cfg.Consumers {
			cons, err := c.cfg.Transport.Subscribe(ctx, g, topics)
			if err != nil {
				c.Stop()
				return fmt.Errorf("cap: subscribe group %q: %w", g, err)
			}
			c.mu.Lock()
			c.conns = append(c.conns, cons)
			c.mu.Unlock()
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				c.loop(ctx, g, topics, cons)
			}()
		}
	}
	return nil
}

// Stop closes the broker consumers and waits for the receive loops.
func (c *Consumers[TTx]) Stop() {
	c.mu.Lock()
	conns := c.conns
	c.conns = nil
	c.mu.Unlock()
	for _, cons := range conns {
		_ = cons.Close()
	}
	c.wg.Wait()
}

func (c *Consumers[TTx]) loop(ctx context.Context, group string, topics []string, cons transport.Consumer) {
	backoff := 100 * time.Millisecond
	for {
		d, err := cons.Receive(ctx)
		if err == nil {
			backoff = 100 * time.Millisecond
			c.accept(ctx, group, d)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, transport.ErrClosed) {
			c.mu.Lock()
			stopped := c.conns == nil
			c.mu.Unlock()
			if stopped {
				return
			}
			// The transport dropped this consumer: open a new one.
			c.cfg.Logger.WarnContext(ctx, "cap: consumer closed, subscribing again", "group", group)
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			n, serr := c.cfg.Transport.Subscribe(ctx, group, topics)
			if serr != nil {
				if errors.Is(serr, transport.ErrClosed) {
					return
				}
				continue
			}
			c.mu.Lock()
			if c.conns == nil {
				c.mu.Unlock()
				_ = n.Close()
				return
			}
			c.conns = append(c.conns, n)
			c.mu.Unlock()
			cons = n
			continue
		}
		c.cfg.Logger.WarnContext(ctx, "cap: receiving failed", "group", group, "error", err)
		if !sleepCtx(ctx, backoff) {
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// accept stores one delivery and hands it to the executor. It never leaves
// a delivery that cannot succeed to be redelivered forever: a message
// without CAP's headers or without a subscriber is stored as Failed and
// acked; only a storage failure rejects it, for a later redelivery.
func (c *Consumers[TTx]) accept(ctx context.Context, group string, d transport.Delivery) {
	msg := d.Message()
	if msg.Headers == nil {
		msg.Headers = message.Headers{}
	}
	if (msg.ID() == "" || msg.Name() == "") && c.cfg.HeadersBuilder != nil {
		for k, v := range c.cfg.HeadersBuilder(d) {
			if msg.Headers[k] == "" {
				msg.Headers[k] = v
			}
		}
	}
	delete(msg.Headers, message.HeaderException)
	msg.Headers[message.HeaderGroup] = group
	if c.cfg.InstanceID != "" {
		msg.Headers[message.HeaderExecutionInstanceID] = c.cfg.InstanceID
	}
	if msg.ID() == "" || msg.Name() == "" {
		c.reject(ctx, group, d, msg, excHeaders,
			fmt.Errorf("message on %q has no %s or %s header; set Options.CustomHeaders to accept such messages",
				d.Topic(), message.HeaderMessageID, message.HeaderMessageName))
		return
	}
	sub := c.reg.Find(group, msg.Name())
	if sub == nil {
		c.reject(ctx, group, d, msg, excNotFound, fmt.Errorf("no subscriber of group %q for topic %q", group, msg.Name()))
		return
	}
	content, err := message.EncodeContent(msg)
	if err != nil {
		c.reject(ctx, group, d, msg, excHeaders, err)
		return
	}
	rec := &storage.Record{ID: c.cfg.NewID(), Version: c.cfg.Version, Name: msg.Name(), Group: group,
		MessageID: msg.ID(), Content: content, Status: storage.StatusScheduled, DueIn: c.cfg.Lease}
	inserted, err := c.cfg.Store.InsertReceived(ctx, rec)
	if err != nil {
		c.storeFailed(ctx, d, err)
		return
	}
	if err := d.Ack(ctx); err != nil {
		// Stored already: a redelivery is recognised as a duplicate.
		c.cfg.Logger.WarnContext(ctx, "cap: ack failed", "group", group, "id", msg.ID(), "error", err)
	}
	if !inserted {
		c.cfg.Logger.DebugContext(ctx, "cap: duplicate message dropped", "group", group, "id", msg.ID())
		return
	}
	c.exec.Submit(ctx, rec, msg, sub)
}

// reject stores a message that cannot be handled as Failed for good and
// acks it, so it shows on the dashboard and is never redelivered in a loop.
func (c *Consumers[TTx]) reject(ctx context.Context, group string, d transport.Delivery, msg *message.Message, typ string, cause error) {
	id := c.cfg.NewID()
	msgID := msg.ID()
	if msgID == "" {
		msgID = strconv.FormatInt(id, 10)
	}
	name := msg.Name()
	if name == "" {
		name = d.Topic()
	}
	content := withException(msg, exception(typ, cause))
	if content == nil {
		content = []byte(`{"Headers":{},"Value":null}`)
	}
	rec := &storage.Record{ID: id, Version: c.cfg.Version, Name: name, Group: group, MessageID: msgID,
		Content: content, Status: storage.StatusFailed, Retries: retry.MaxRetries(c.cfg.HandlerRetry),
		Terminal: true, ExpiresIn: c.cfg.FailedExpiry}
	if _, err := c.cfg.Store.InsertReceived(ctx, rec); err != nil {
		c.storeFailed(ctx, d, err)
		return
	}
	if err := d.Ack(ctx); err != nil {
		c.cfg.Logger.WarnContext(ctx, "cap: ack failed", "group", group, "error", err)
	}
	c.cfg.Logger.WarnContext(ctx, "cap: message cannot be handled; stored as Failed", "group", group,
		"name", name, "id", msgID, "error", cause)
	if c.cfg.OnFailed != nil {
		c.cfg.OnFailed(ctx, FailedInfo{Table: storage.Received, Message: msg, Err: cause})
	}
}

// storeFailed returns a delivery the storage could not take to the broker,
// and slows down so a database outage does not become a redelivery storm.
func (c *Consumers[TTx]) storeFailed(ctx context.Context, d transport.Delivery, err error) {
	c.cfg.Logger.WarnContext(ctx, "cap: storing received message failed; returned to the broker", "error", err)
	if rerr := d.Reject(ctx); rerr != nil {
		c.cfg.Logger.WarnContext(ctx, "cap: reject failed", "error", rerr)
	}
	sleepCtx(ctx, time.Second)
}
