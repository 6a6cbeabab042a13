package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/go-cap/cap/internal/telemetry"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/transport"
)

// Consumers receives the messages of every group from the transport, stores
// them in the Received table (a duplicate of (cap-msg-id, group) is acked
// and dropped), acks them and passes them to the Executor.
//
// Each broker consumer has two goroutines: a receiver that prepares the
// rows, and a storer that inserts what has arrived meanwhile in one
// transaction (InsertReceivedBatch) and only then acks. A delivery is never
// acked before its row is committed, and one commit covers a burst.
type Consumers[TTx any] struct {
	cfg  *Config[TTx]
	reg  *Registry[TTx]
	exec *Executor[TTx]

	mu    sync.Mutex
	conns []transport.Consumer
	loops []*loopState
	wg    sync.WaitGroup
	// pause ends the receive loops' receiving (Pause).
	pause context.CancelFunc
}

// loopState is what the health check reads of one receive loop.
type loopState struct {
	group string
	up    atomic.Bool           // a broker consumer is open
	err   atomic.Pointer[error] // the last receive error, nil after a success
}

// GroupStatus is the state of one group's receive loops.
type GroupStatus struct {
	Group   string
	Wanted  int   // broker consumers configured
	Running int   // of them, those with an open broker consumer
	Err     error // the last receive error of a loop, nil when none failed since its last success
}

// Status returns the state of every group's receive loops, in
// registration order; empty before Start and after Stop.
func (c *Consumers[TTx]) Status() []GroupStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []GroupStatus
	idx := map[string]int{}
	for _, l := range c.loops {
		i, ok := idx[l.group]
		if !ok {
			i = len(out)
			idx[l.group] = i
			out = append(out, GroupStatus{Group: l.group})
		}
		out[i].Wanted++
		if l.up.Load() {
			out[i].Running++
		}
		if e := l.err.Load(); e != nil && out[i].Err == nil {
			out[i].Err = *e
		}
	}
	return out
}

// NewConsumers returns the consumer side of the bus.
func NewConsumers[TTx any](cfg *Config[TTx], reg *Registry[TTx], exec *Executor[TTx]) *Consumers[TTx] {
	return &Consumers[TTx]{cfg: cfg, reg: reg, exec: exec}
}

// Start subscribes every group (Config.Consumers clients each) and starts
// their receive loops, which end with ctx or Stop. When Start returns, every
// group is bound on the broker. When ctx ends (an abrupt stop, without
// Stop), the broker consumers are closed, as a crashed process's
// connections would be, so that the broker redelivers the deliveries they
// hold unacked to another instance instead of keeping them for a consumer
// nobody reads.
func (c *Consumers[TTx]) Start(ctx context.Context) error {
	rctx, pause := context.WithCancel(ctx)
	c.mu.Lock()
	c.pause = pause
	c.mu.Unlock()
	context.AfterFunc(ctx, c.Close)
	for _, g := range c.reg.Groups() {
		topics := c.reg.Topics(g)
		for range c.cfg.Consumers {
			cons, err := c.cfg.Transport.Subscribe(ctx, g, topics)
			if err != nil {
				c.Stop()
				return fmt.Errorf("cap: subscribe group %q: %w", g, err)
			}
			st := &loopState{group: g}
			st.up.Store(true)
			c.mu.Lock()
			c.conns = append(c.conns, cons)
			c.loops = append(c.loops, st)
			c.mu.Unlock()
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				defer st.up.Store(false)
				c.loop(ctx, rctx, st, topics, cons)
			}()
		}
	}
	return nil
}

// Stop closes the broker consumers and waits for the receive loops.
func (c *Consumers[TTx]) Stop() {
	c.Pause()
	c.Close()
}

// Pause stops receiving and waits for the receive loops to end, their
// deliveries stored or handed to the executor; the broker consumers stay
// open, so that the deliveries the executor still holds can be acked. Close
// closes them.
func (c *Consumers[TTx]) Pause() {
	c.mu.Lock()
	pause := c.pause
	c.mu.Unlock()
	if pause != nil {
		pause()
	}
	c.wg.Wait()
}

// Close closes the broker consumers and waits for the receive loops.
func (c *Consumers[TTx]) Close() {
	c.mu.Lock()
	conns := c.conns
	c.conns = nil
	c.loops = nil
	c.mu.Unlock()
	for _, cons := range conns {
		_ = cons.Close()
	}
	c.wg.Wait()
}

// arrival is a delivery on its way into the Received table.
type arrival[TTx any] struct {
	d   transport.Delivery
	msg *message.Message
	rec *storage.Record
	sub *Subscriber[TTx] // nil: stored as Failed for good, for cause
	// cause is why the message can never be handled, when sub is nil.
	cause error
	span  telemetry.Span // the receive's, until the ack
}

// loop receives with rctx, which Pause ends, and stores with ctx.
func (c *Consumers[TTx]) loop(ctx, rctx context.Context, st *loopState, topics []string, cons transport.Consumer) {
	group := st.group
	in := make(chan *arrival[TTx], c.cfg.BatchSize)
	var storer sync.WaitGroup
	storer.Go(func() { c.storeLoop(ctx, group, in) })
	defer storer.Wait()
	defer close(in)

	backoff := 100 * time.Millisecond
	for {
		d, err := cons.Receive(rctx)
		if err == nil {
			if st.err.Load() != nil {
				st.err.Store(nil)
			}
			backoff = 100 * time.Millisecond
			select {
			case in <- c.prepare(ctx, group, d):
			case <-rctx.Done():
				return // not acked: the broker delivers it again
			}
			continue
		}
		if rctx.Err() != nil {
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
			st.up.Store(false)
			st.err.Store(&err)
			c.cfg.Logger.WarnContext(ctx, "cap: consumer closed, subscribing again", "group", group)
			if !sleepCtx(rctx, backoff) {
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			n, serr := c.cfg.Transport.Subscribe(rctx, group, topics)
			if serr != nil {
				if errors.Is(serr, transport.ErrClosed) {
					return
				}
				st.err.Store(&serr)
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
			st.up.Store(true)
			cons = n
			continue
		}
		st.err.Store(&err)
		c.cfg.Logger.WarnContext(ctx, "cap: receiving failed", "group", group, "error", err)
		if !sleepCtx(rctx, backoff) {
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// prepare makes the Received row of one delivery. A message that can never
// succeed (no CAP headers, no subscriber in the group) gets a row that is
// Failed for good, so that it shows on the dashboard and is acked instead
// of being redelivered in a loop.
func (c *Consumers[TTx]) prepare(ctx context.Context, group string, d transport.Delivery) *arrival[TTx] {
	a := c.arrive(group, d)
	a.span = c.cfg.Tel.StartReceive(ctx, a.rec.Name, group, a.msg.Headers, len(a.msg.Body))
	return a
}

func (c *Consumers[TTx]) arrive(group string, d transport.Delivery) *arrival[TTx] {
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
		return c.unhandled(group, d, msg, excHeaders,
			fmt.Errorf("message on %q has no %s or %s header; set Options.CustomHeaders to accept such messages",
				d.Topic(), message.HeaderMessageID, message.HeaderMessageName))
	}
	if err := checkKey(msg.ID(), msg.Name()); err != nil {
		return c.unhandled(group, d, msg, excHeaders, err)
	}
	sub := c.reg.Find(group, msg.Name())
	if sub == nil {
		return c.unhandled(group, d, msg, excNotFound, fmt.Errorf("no subscriber of group %q for topic %q", group, msg.Name()))
	}
	content, err := message.EncodeContent(msg)
	if err != nil {
		return c.unhandled(group, d, msg, excHeaders, err)
	}
	rec := &storage.Record{ID: c.cfg.NewID(), Version: c.cfg.Version, Name: msg.Name(), Group: group,
		MessageID: msg.ID(), Content: content, Status: storage.StatusScheduled, DueIn: c.cfg.Lease}
	return &arrival[TTx]{d: d, msg: msg, rec: rec, sub: sub}
}

// unhandled makes the Failed row of a message that cannot be handled.
func (c *Consumers[TTx]) unhandled(group string, d transport.Delivery, msg *message.Message, typ string, cause error) *arrival[TTx] {
	id := c.cfg.NewID()
	msgID := cleanKey(msg.ID())
	if msgID == "" {
		msgID = strconv.FormatInt(id, 10)
	}
	name := msg.Name()
	if name == "" {
		name = d.Topic()
	}
	name = cleanKey(name)
	content := withException(msg, exception(typ, cause))
	if content == nil {
		content = []byte(`{"Headers":{},"Value":null}`)
	}
	rec := &storage.Record{ID: id, Version: c.cfg.Version, Name: name, Group: group, MessageID: msgID,
		Content: content, Status: storage.StatusFailed, Retries: retry.MaxRetries(c.cfg.HandlerRetry),
		Terminal: true, ExpiresIn: c.cfg.FailedExpiry}
	return &arrival[TTx]{d: d, msg: msg, rec: rec, cause: cause}
}

// storeLoop stores what the receiver prepared: it takes every arrival
// waiting when it wakes, up to BatchSize, so a lone delivery is stored at
// once and a burst in one transaction. Under a steady flow (the previous
// batch held more than one delivery) it also waits up to
// Config.ReceiveLinger for more, so that the batches, and not the commits,
// grow with the arrival rate; the first delivery after a flow ends is the
// only lone one that waits. It returns when in is closed.
func (c *Consumers[TTx]) storeLoop(ctx context.Context, group string, in <-chan *arrival[TTx]) {
	batch := make([]*arrival[TTx], 0, c.cfg.BatchSize)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	steady := false
	for a := range in {
		batch = append(batch[:0], a)
		closed := false
	fill:
		for len(batch) < c.cfg.BatchSize {
			select {
			case a, ok := <-in:
				if !ok {
					closed = true
					break fill
				}
				batch = append(batch, a)
			default:
				break fill
			}
		}
		if steady && !closed && len(batch) < c.cfg.BatchSize {
			linger.Reset(cmp.Or(c.cfg.ReceiveLinger, defaultReceiveLinger))
		wait:
			for len(batch) < c.cfg.BatchSize {
				select {
				case a, ok := <-in:
					if !ok {
						break wait
					}
					batch = append(batch, a)
				case <-linger.C:
					break wait
				case <-ctx.Done():
					break wait
				}
			}
			linger.Stop()
		}
		steady = len(batch) > 1
		if ctx.Err() != nil || c.stopped() {
			// The broker consumer is closed: these deliveries go back to
			// the broker unacked, and come again.
			for _, a := range batch {
				a.span.End(transport.ErrClosed)
			}
			continue
		}
		c.store(ctx, group, batch)
	}
}

// defaultReceiveLinger bounds how long a delivery waits for others to be
// stored with under a steady flow: the price in latency of fewer commits
// (at 1,000 msg/s on PostgreSQL: 8-10 rows a commit instead of 5-7).
const defaultReceiveLinger = 2 * time.Millisecond

func (c *Consumers[TTx]) stopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns == nil
}

// store inserts the rows of a batch, acks the deliveries whose row is
// committed (a duplicate of a stored row too) and hands the new rows to the
// executor. A delivery whose row could not be stored is rejected, for a
// later redelivery.
func (c *Consumers[TTx]) store(ctx context.Context, group string, batch []*arrival[TTx]) {
	batch = c.runDirect(ctx, group, batch)
	if len(batch) == 0 {
		return
	}
	recs := make([]*storage.Record, len(batch))
	for i, a := range batch {
		recs[i] = a.rec
	}
	// The rows to run are this instance's from the moment they are
	// committed: their leases are kept alive while the insert and the acks
	// below take their time, so that a slow storage or broker cannot let a
	// lease run out and another claim run a handler that this instance is
	// about to run too.
	var tracked []int64
	for _, a := range batch {
		if a.sub != nil {
			tracked = append(tracked, a.rec.ID)
		}
	}
	c.exec.track(tracked...)
	inserted, err := c.cfg.Store.InsertReceivedBatch(ctx, recs)
	var returned []bool // rows that could not be stored, when any
	if err != nil {
		if ctx.Err() != nil {
			c.exec.done(tracked)
			for _, a := range batch {
				a.span.End(ctx.Err())
			}
			return // abrupt stop: the broker delivers them again
		}
		// Row by row, so that one row the database refuses does not hold
		// back the others.
		c.cfg.Logger.WarnContext(ctx, "cap: storing received messages failed; storing them one by one",
			"group", group, "messages", len(batch), "error", err)
		inserted = make([]bool, len(batch))
		returned = make([]bool, len(batch))
		for i, a := range batch {
			ok, err := c.cfg.Store.InsertReceived(ctx, a.rec)
			if err != nil && ctx.Err() == nil {
				ok, err = c.storeRefused(ctx, group, batch, i, err)
			}
			if err != nil {
				c.returnDelivery(ctx, group, a, err)
				returned[i] = true
				continue
			}
			inserted[i] = ok
		}
	}
	// The rows that do not run are untracked: not stored, stored by
	// another copy, or stored as Failed in their place (storeRefused).
	var untrack []int64
	for i, a := range batch {
		if a.rec != recs[i] || (a.sub != nil && (!inserted[i] || (returned != nil && returned[i]))) {
			untrack = append(untrack, recs[i].ID)
		}
	}
	c.exec.done(untrack)
	// Acks first: a busy executor must not hold back the acks of the batch.
	for i, a := range batch {
		if returned != nil && returned[i] {
			continue
		}
		c.ackDelivery(ctx, group, a)
	}
	for i, a := range batch {
		switch {
		case returned != nil && returned[i]:
			a.span.End(errReturned)
		case a.sub == nil:
			c.cfg.Tel.Handled(ctx, group, a.rec.Name, telemetry.OutcomeFailed)
			c.cfg.Logger.WarnContext(ctx, "cap: message cannot be handled; stored as Failed", "group", group,
				"name", a.rec.Name, "id", a.rec.MessageID, "error", a.cause)
			if c.cfg.OnFailed != nil {
				c.cfg.OnFailed(ctx, FailedInfo{Table: storage.Received, Message: a.msg, Err: a.cause})
			}
		case !inserted[i]:
			c.cfg.Logger.DebugContext(ctx, "cap: duplicate message dropped", "group", group, "name", a.rec.Name,
				"id", a.msg.ID())
		default:
			c.exec.Submit(ctx, a.rec, a.msg, a.sub)
		}
	}
	if slices.Contains(returned, true) {
		// A database outage must not become a redelivery storm.
		sleepCtx(ctx, time.Second)
	}
}

// storeRefused handles a row the database refused for its values
// (storage.ErrRefused): it stores the message as Failed for good with the
// storage's error (its Failed row holds only text the storage takes), so a
// message the database cannot hold is acked instead of being redelivered
// forever. Any other error (an outage, a restart) returns the delivery to
// the broker: the message is not failed for what was the database's state.
func (c *Consumers[TTx]) storeRefused(ctx context.Context, group string, batch []*arrival[TTx], i int, cause error) (bool, error) {
	a := batch[i]
	if !errors.Is(cause, storage.ErrRefused) || a.sub == nil {
		return false, cause
	}
	f := c.unhandled(group, a.d, a.msg, excStore, fmt.Errorf("the storage refused the message: %w", cause))
	if _, err := c.cfg.Store.InsertReceived(ctx, f.rec); err != nil {
		return false, err
	}
	f.span = a.span
	batch[i] = f
	return true, nil
}

// checkKey checks the headers that become the Received row's key columns.
func checkKey(id, name string) error {
	for _, h := range []struct{ key, v string }{{message.HeaderMessageID, id}, {message.HeaderMessageName, name}} {
		switch {
		case !utf8.ValidString(h.v) || strings.ContainsRune(h.v, 0):
			return fmt.Errorf("header %s is not valid text: %q", h.key, h.v)
		case utf8.RuneCountInString(h.v) > maxKeyLen:
			return fmt.Errorf("header %s is longer than %d characters", h.key, maxKeyLen)
		}
	}
	return nil
}

// maxKeyLen is the width of the Name and MessageId columns (CAP's 200).
const maxKeyLen = 200

// cleanKey makes s storable in a key column: valid UTF-8, no NUL, at most
// maxKeyLen characters.
func cleanKey(s string) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
	if utf8.RuneCountInString(s) > maxKeyLen {
		s = string([]rune(s)[:maxKeyLen])
	}
	return s
}

// returnDelivery gives a delivery the storage could not take back to the
// broker.
func (c *Consumers[TTx]) returnDelivery(ctx context.Context, group string, a *arrival[TTx], err error) {
	c.cfg.Logger.WarnContext(ctx, "cap: storing received message failed; returned to the broker",
		"group", group, "name", a.rec.Name, "id", a.msg.ID(), "error", err)
	if rerr := a.d.Reject(ctx); rerr != nil {
		c.cfg.Logger.WarnContext(ctx, "cap: reject failed", "group", group, "name", a.rec.Name, "id", a.msg.ID(),
			"error", rerr)
	}
}

// errReturned is the receive span's error of a delivery given back to the
// broker because the storage could not take it.
var errReturned = errors.New("cap: the storage could not take the message; returned to the broker")

// runDirect hands the deliveries of plain handlers to the executor before
// their rows are written (see direct.go), when the storage can tell which
// are stored already, and returns the others, to be stored first. A
// delivery whose row exists, or whose message is already on its way here,
// is acked and dropped.
//
// A delivery's key is claimed before the storage is asked: a copy whose
// first is on its way fails the claim, and a copy that claims after the
// first released its key (once its row was committed) finds that row. A
// look-up made before the claim could miss a row committed in between.
func (c *Consumers[TTx]) runDirect(ctx context.Context, group string, batch []*arrival[TTx]) []*arrival[TTx] {
	checker, ok := c.cfg.Store.(storage.ReceivedChecker)
	if !ok || c.cfg.StoreFirst {
		return batch
	}
	var keys []storage.ReceivedKey
	var idx []int
	direct := make([]bool, len(batch))
	for i, a := range batch {
		if a.sub == nil || a.sub.Tx {
			continue
		}
		direct[i] = true
		k := storage.ReceivedKey{MessageID: a.rec.MessageID, Group: a.rec.Group}
		if !c.exec.claimKey(k) {
			c.dropDuplicate(ctx, group, a)
			continue
		}
		keys = append(keys, k)
		idx = append(idx, i)
	}
	if len(keys) > 0 {
		exists, err := checker.ReceivedExists(ctx, keys)
		if err != nil {
			if ctx.Err() == nil {
				c.cfg.Logger.DebugContext(ctx, "cap: looking up received messages failed; storing them first",
					"group", group, "messages", len(keys), "error", err)
			}
			for n, i := range idx {
				c.exec.releaseKey(keys[n])
				direct[i] = false
			}
		} else {
			for n, i := range idx {
				a := batch[i]
				if exists[n] {
					c.exec.releaseKey(keys[n])
					c.dropDuplicate(ctx, group, a)
					continue
				}
				c.exec.SubmitDirect(ctx, a.rec, a.msg, a.sub, c.directOf(group, a, keys[n]))
			}
		}
	}
	rest := batch[:0:0]
	for i, a := range batch {
		if !direct[i] {
			rest = append(rest, a)
		}
	}
	return rest
}

// dropDuplicate acks and drops a delivery whose message is stored already
// or on its way in this instance.
func (c *Consumers[TTx]) dropDuplicate(ctx context.Context, group string, a *arrival[TTx]) {
	c.cfg.Logger.DebugContext(ctx, "cap: duplicate message dropped", "group", group, "name", a.rec.Name,
		"id", a.msg.ID())
	c.ackDelivery(ctx, group, a)
}

// directOf returns the ack and reject of a direct delivery.
func (c *Consumers[TTx]) directOf(group string, a *arrival[TTx], key storage.ReceivedKey) *direct {
	return &direct{key: key,
		ack: func(ctx context.Context, stored bool) {
			c.exec.releaseKey(key)
			if !stored {
				c.cfg.Logger.DebugContext(ctx, "cap: message handled again; another copy was stored first",
					"group", group, "name", a.rec.Name, "id", a.msg.ID())
			}
			c.ackDelivery(ctx, group, a)
		},
		reject: func(ctx context.Context, err error) {
			c.exec.releaseKey(key)
			if errors.Is(err, storage.ErrRefused) {
				// A row the database cannot hold would come back forever:
				// it is stored Failed with the storage's error, as on the
				// way in, and acked.
				f := c.unhandled(group, a.d, a.msg, excStore, fmt.Errorf("the storage refused the message: %w", err))
				if _, ferr := c.cfg.Store.InsertReceived(ctx, f.rec); ferr == nil {
					c.ackDelivery(ctx, group, a)
					c.cfg.Logger.WarnContext(ctx, "cap: message cannot be stored; stored as Failed", "group", group,
						"name", a.rec.Name, "id", a.rec.MessageID, "error", f.cause)
					if c.cfg.OnFailed != nil {
						c.cfg.OnFailed(ctx, FailedInfo{Table: storage.Received, Message: a.msg, Err: f.cause})
					}
					return
				}
			}
			c.returnDelivery(ctx, group, a, err)
			a.span.End(errReturned)
		},
	}
}

// ackDelivery acks a delivery whose row is committed.
func (c *Consumers[TTx]) ackDelivery(ctx context.Context, group string, a *arrival[TTx]) {
	if err := a.d.Ack(ctx); err != nil {
		// Stored already: a redelivery is recognised as a duplicate.
		c.cfg.Logger.WarnContext(ctx, "cap: ack failed", "group", group, "name", a.rec.Name, "id", a.msg.ID(),
			"error", err)
	}
	a.span.End(nil)
	c.cfg.Tel.Consumed(ctx, group, a.rec.Name)
}
