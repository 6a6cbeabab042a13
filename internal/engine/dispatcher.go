package engine

import (
	"context"
	"sync"
	"time"

	"github.com/go-cap/cap/internal/telemetry"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/transport"
)

// item is one Published row on its way to the broker. msg is set when the
// publisher handed the row over in memory, so it need not be decoded.
type item struct {
	rec *storage.Record
	msg *message.Message
	// span is the send's span, from prepare to the broker's answer (zero
	// when tracing is off).
	span telemetry.Span
}

// batch is rows on their way to a sender. A claimed batch holds one of the
// claimer's slots until a sender takes it.
type batch struct {
	items   []item
	claimed bool
}

// Dispatcher sends Published rows to the broker. Rows reach it two ways: the
// publisher hands over rows it stored already leased to this instance (no
// query needed), and a claimer leases due rows from the table when woken by
// a publish, a storage notification, a timer for a delayed row, or the
// poll. A sender sends what is waiting together, up to BatchSize rows, so
// that hand-overs of one row each still reach the broker in batches.
type Dispatcher[TTx any] struct {
	cfg  *Config[TTx]
	work chan batch
	// slots bounds the claimed batches no sender has taken yet, so that
	// the claimer does not lease rows far ahead of the senders; the rest of
	// work's room is for hand-overs.
	slots  chan struct{}
	wake   chan struct{}
	writer *outcomeWriter[TTx]

	// Hand-overs that found the queue full are released in batches by
	// releaseLoop: one statement for many transactions, and none of them
	// waits for it.
	relMu   sync.Mutex
	relIDs  []int64
	relWake chan struct{}
	relStop chan struct{}

	mu      sync.Mutex
	running bool
	wg      sync.WaitGroup
	claimWG sync.WaitGroup
	stop    context.CancelFunc // stops the claimer
}

// NewDispatcher returns a dispatcher; Run starts it.
func NewDispatcher[TTx any](cfg *Config[TTx]) *Dispatcher[TTx] {
	claimed := cfg.Senders * 2
	// Room for the hand-overs of a few seconds of transactions while the
	// senders fall behind: a full queue releases rows to the claimer, which
	// costs two updates per row. The rows stay leased meanwhile, and a
	// graceful stop still sends them.
	handovers := min(8*cfg.Senders*cfg.BatchSize, 16384)
	return &Dispatcher[TTx]{
		cfg:     cfg,
		work:    make(chan batch, claimed+handovers),
		slots:   make(chan struct{}, claimed),
		wake:    make(chan struct{}, 1),
		relWake: make(chan struct{}, 1),
		relStop: make(chan struct{}),
	}
}

// Wake asks the claimer to look for due rows now.
func (d *Dispatcher[TTx]) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// WakeAt asks the claimer to look for due rows after delay (for a delayed
// message or a retry published by this instance).
func (d *Dispatcher[TTx]) WakeAt(delay time.Duration) {
	if delay <= 0 {
		d.Wake()
		return
	}
	time.AfterFunc(delay+5*time.Millisecond, d.Wake)
}

// Running reports whether the dispatcher takes hand-overs.
func (d *Dispatcher[TTx]) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.running
}

// Handover gives the dispatcher rows the caller stored leased to this
// instance (DueIn = lease) and has committed. It does not wait for the
// senders: when they are behind, the rows are released in the background
// so that any instance claims them at once, and Handover reports false.
// When the dispatcher is stopped it releases them itself.
func (d *Dispatcher[TTx]) Handover(ctx context.Context, recs []*storage.Record, msgs []*message.Message) bool {
	items := make([]item, len(recs))
	for i := range recs {
		items[i] = item{rec: recs[i]}
		if msgs != nil {
			items[i].msg = msgs[i]
		}
	}
	d.mu.Lock()
	running, queued := d.running, false
	if running {
		select {
		case d.work <- batch{items: items}:
			queued = true
		default:
			// Under d.mu, so that Stop's last flush sees them.
			d.releaseLater(items)
		}
	}
	d.mu.Unlock()
	if !running {
		d.release(ctx, items)
	}
	return queued
}

// releaseLater queues rows for releaseLoop.
func (d *Dispatcher[TTx]) releaseLater(items []item) {
	d.relMu.Lock()
	for _, it := range items {
		d.relIDs = append(d.relIDs, it.rec.ID)
	}
	d.relMu.Unlock()
	select {
	case d.relWake <- struct{}{}:
	default:
	}
}

// releaseLoop releases the rows of overflowing hand-overs, all that are
// waiting in one statement, until Stop (after a last flush) or ctx ends
// (the rows then come back after their lease).
func (d *Dispatcher[TTx]) releaseLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.relWake:
		case <-d.relStop:
			d.flushReleases(ctx)
			return
		}
		d.flushReleases(ctx)
	}
}

func (d *Dispatcher[TTx]) flushReleases(ctx context.Context) {
	d.relMu.Lock()
	ids := d.relIDs
	d.relIDs = nil
	d.relMu.Unlock()
	if len(ids) == 0 {
		return
	}
	if err := d.cfg.Store.Reschedule(ctx, storage.Published, ids, 0); err != nil {
		d.cfg.Logger.WarnContext(ctx, "cap: releasing published rows failed; they are sent after their lease",
			"rows", len(ids), "error", err)
	}
	d.Wake()
}

// release makes leased rows due again, so that they are not stuck until the
// lease ends.
func (d *Dispatcher[TTx]) release(ctx context.Context, items []item) {
	if len(items) == 0 {
		return
	}
	ids := make([]int64, len(items))
	for i, it := range items {
		ids[i] = it.rec.ID
	}
	if err := d.cfg.Store.Reschedule(context.WithoutCancel(ctx), storage.Published, ids, 0); err != nil {
		d.cfg.Logger.WarnContext(ctx, "cap: releasing published rows failed; they are sent after their lease",
			"rows", len(ids), "error", err)
	}
	d.Wake()
}

// Run starts the claimer, the senders and the outcome writer. They stop
// when ctx ends (abruptly) or after Stop (gracefully).
func (d *Dispatcher[TTx]) Run(ctx context.Context, notify <-chan struct{}) {
	claimCtx, stop := context.WithCancel(ctx)
	d.mu.Lock()
	d.running = true
	d.stop = stop
	d.mu.Unlock()

	d.writer = newOutcomeWriter(d.cfg.Store, storage.Published, d.cfg.BatchSize, d.cfg.Logger, nil)
	go d.writer.run(ctx)
	for range d.cfg.Senders {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.sendLoop(ctx)
		}()
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.releaseLoop(ctx)
	}()
	d.claimWG.Add(1)
	go func() {
		defer d.claimWG.Done()
		d.claimLoop(claimCtx, notify)
	}()
}

// Stop stops claiming, lets the senders finish the rows they hold, releases
// rows still queued and waits for the outcomes to be written, or for ctx.
func (d *Dispatcher[TTx]) Stop(ctx context.Context) error {
	d.mu.Lock()
	if !d.running {
		d.mu.Unlock()
		return nil
	}
	d.running = false
	d.stop()
	d.mu.Unlock()
	d.claimWG.Wait()
	close(d.work) // no Handover or claimer writes after running = false
	close(d.relStop)
	return drain(ctx, &d.wg, d.writer)
}

func (d *Dispatcher[TTx]) claimLoop(ctx context.Context, notify <-chan struct{}) {
	tick := time.NewTicker(d.cfg.PollInterval)
	defer tick.Stop()
	for {
		for {
			n, err := d.claimOnce(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				d.cfg.Logger.WarnContext(ctx, "cap: claiming published rows failed", "error", err)
				break
			}
			if n < d.cfg.BatchSize {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-notify:
		case <-tick.C:
		}
	}
}

func (d *Dispatcher[TTx]) claimOnce(ctx context.Context) (int, error) {
	select {
	case d.slots <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	recs, err := d.cfg.Store.Claim(ctx, storage.Published, storage.ClaimRequest{
		Version: d.cfg.Version, Limit: d.cfg.BatchSize, Lease: d.cfg.Lease,
	})
	if err != nil || len(recs) == 0 {
		<-d.slots
		return 0, err
	}
	items := make([]item, len(recs))
	for i, r := range recs {
		items[i] = item{rec: r}
	}
	select {
	case d.work <- batch{items: items, claimed: true}:
	case <-ctx.Done():
		<-d.slots
		d.release(ctx, items)
		return 0, ctx.Err()
	}
	return len(recs), nil
}

func (d *Dispatcher[TTx]) sendLoop(ctx context.Context) {
	// With a transport that can, a sender publishes every batch at once and
	// a goroutine waits for the broker's confirms in order, so that a
	// message never waits for the confirms of an earlier batch. What waits
	// is bounded in messages and bytes (win), not in batches: under a
	// backlog the batches are full, and at a low rate a message is
	// published as soon as it is committed.
	pipe, _ := d.cfg.Transport.(transport.Pipeliner)
	var confirms chan func()
	var win *window // what is published and not yet confirmed
	if pipe != nil {
		win = newWindow(pipelineDepth*d.cfg.BatchSize, pipelineBytes)
		confirms = make(chan func(), pipelineDepth*d.cfg.BatchSize)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for wait := range confirms {
				wait()
			}
		}()
		defer func() {
			close(confirms)
			<-done
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return // abrupt stop: the rows come back after their lease
		case b, ok := <-d.work:
			if !ok {
				return
			}
			items := d.take(b)
		more:
			for len(items) < d.cfg.BatchSize {
				select {
				case b, ok := <-d.work:
					if !ok {
						break more
					}
					items = append(items, d.take(b)...)
				default:
					break more
				}
			}
			if pipe == nil {
				d.send(ctx, items)
				continue
			}
			pend, msgs := d.prepare(ctx, items)
			if len(pend) == 0 {
				continue
			}
			// Room for this batch first: a sender far ahead of the
			// broker's confirms waits here, and its next batch grows.
			size := batchBytes(pend)
			win.acquire(len(msgs), size)
			start := time.Now()
			wait := pipe.PublishBatch(ctx, msgs)
			confirms <- func() {
				d.finish(ctx, pend, msgs, start, wait())
				win.release(len(msgs), size)
			}
		}
	}
}

// What one sender may have published and the broker not yet confirmed:
// pipelineDepth × BatchSize messages, and pipelineBytes of them. The count
// keeps the broker busy between confirms (with a backlog on RabbitMQ, 16
// batches sent 8-14 % more than 4 in three runs each); the bytes keep large
// messages from filling the memory meanwhile.
const (
	pipelineDepth = 16
	pipelineBytes = 8 << 20
)

// window bounds the messages a sender has published and not seen confirmed,
// in number and in bytes. A batch waits until it fits; one larger than the
// bounds goes alone, when nothing else is unconfirmed.
type window struct {
	mu                sync.Mutex
	fits              sync.Cond
	msgs, bytes       int
	maxMsgs, maxBytes int
}

func newWindow(maxMsgs, maxBytes int) *window {
	w := &window{maxMsgs: maxMsgs, maxBytes: maxBytes}
	w.fits.L = &w.mu
	return w
}

// acquire waits until n messages of size bytes fit. It does not watch a
// context: what it waits for, the confirms of earlier batches, ends with
// the context of their sends.
func (w *window) acquire(n, size int) {
	w.mu.Lock()
	for w.msgs > 0 && (w.msgs+n > w.maxMsgs || w.bytes+size > w.maxBytes) {
		w.fits.Wait()
	}
	w.msgs += n
	w.bytes += size
	w.mu.Unlock()
}

func (w *window) release(n, size int) {
	w.mu.Lock()
	w.msgs -= n
	w.bytes -= size
	w.mu.Unlock()
	w.fits.Broadcast()
}

// batchBytes is the size of the rows' stored Content: their headers and
// bodies, which the rows and their messages hold until the confirms.
func batchBytes(items []item) int {
	n := 0
	for _, it := range items {
		n += len(it.rec.Content)
	}
	return n
}

// take returns a batch's rows and frees its claim slot.
func (d *Dispatcher[TTx]) take(b batch) []item {
	if b.claimed {
		<-d.slots
	}
	return b.items
}

// send sends one batch, retrying immediately as long as the policy says so,
// and queues one outcome per row.
func (d *Dispatcher[TTx]) send(ctx context.Context, items []item) {
	pend, msgs := d.prepare(ctx, items)
	if len(pend) > 0 {
		start := time.Now()
		d.finish(ctx, pend, msgs, start, d.cfg.Transport.SendBatch(ctx, msgs))
	}
}

// prepare decodes the rows that were claimed rather than handed over and
// returns the items to send with their messages. A row that cannot be
// decoded fails for good.
func (d *Dispatcher[TTx]) prepare(ctx context.Context, items []item) ([]item, []*message.Message) {
	msgs := make([]*message.Message, 0, len(items))
	pend := make([]item, 0, len(items))
	for _, it := range items {
		if it.msg == nil {
			m, err := message.DecodeContent(it.rec.Content)
			if err != nil {
				// A row nobody can send; keep it for the dashboard.
				d.writer.put(ctx, storage.Outcome{ID: it.rec.ID, Status: storage.StatusFailed, Retries: it.rec.Retries + 1,
					Content: nil, ExpiresIn: d.cfg.FailedExpiry, ExpiresFromAdded: true})
				d.cfg.Logger.ErrorContext(ctx, "cap: published row has invalid content", "row", it.rec.ID, "name", it.rec.Name,
					"error", err)
				continue
			}
			it.msg = m
		}
		delete(it.msg.Headers, message.HeaderException)
		it.span = d.cfg.Tel.StartSend(ctx, it.rec.Name, it.msg.Headers, len(it.msg.Body), it.rec.Retries)
		pend = append(pend, it)
		msgs = append(msgs, it.msg)
	}
	return pend, msgs
}

// finish records the outcome of a send: errs is the transport's answer for
// msgs (nil when all were sent). Messages whose retry policy allows an
// immediate retry are sent again at once; the others are marked.
func (d *Dispatcher[TTx]) finish(ctx context.Context, pend []item, msgs []*message.Message, start time.Time, errs []error) {
	for {
		var again []item
		var againMsgs []*message.Message
		took := time.Since(start)
		for i, it := range pend {
			if errs == nil || errs[i] == nil {
				d.writer.put(ctx, storage.Outcome{ID: it.rec.ID, Status: storage.StatusSucceeded, Retries: it.rec.Retries,
					ExpiresIn: d.cfg.SucceedExpiry})
				it.span.End(nil)
				d.cfg.Tel.Sent(ctx, it.rec.Name, took, false)
				continue
			}
			d.cfg.Tel.Sent(ctx, it.rec.Name, took, true)
			it.rec.Retries++
			delay, ok := d.cfg.SendRetry.Next(it.rec.Retries)
			if ok && delay == 0 && ctx.Err() == nil {
				again = append(again, it)
				againMsgs = append(againMsgs, it.msg)
				continue
			}
			d.failed(ctx, it, errs[i], delay, ok)
		}
		if len(again) == 0 {
			return
		}
		pend, msgs = again, againMsgs
		start = time.Now()
		errs = d.cfg.Transport.SendBatch(ctx, msgs)
	}
}

func (d *Dispatcher[TTx]) failed(ctx context.Context, it item, err error, delay time.Duration, retryable bool) {
	d.cfg.Logger.WarnContext(ctx, "cap: sending failed", "id", it.msg.ID(), "name", it.rec.Name,
		"retries", it.rec.Retries, "retry", retryable, "error", err)
	it.span.SetAttributes(telemetry.KeyRetries.Int(it.rec.Retries))
	it.span.End(err)
	d.writer.put(ctx, storage.Outcome{ID: it.rec.ID, Status: storage.StatusFailed, Retries: it.rec.Retries,
		Content: withException(it.msg, exception(excSend, err)), ExpiresIn: d.cfg.FailedExpiry, ExpiresFromAdded: true,
		Retry: retryable, RetryIn: delay})
	if retryable {
		d.cfg.Tel.SendRetry(ctx, it.rec.Name)
		d.WakeAt(delay)
		return
	}
	if d.cfg.OnFailed != nil {
		d.cfg.OnFailed(ctx, FailedInfo{Table: storage.Published, Message: it.msg, Err: err})
	}
}
