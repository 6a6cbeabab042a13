package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// Errors of a send the broker refused. Callers test them with errors.Is.
var (
	// ErrNacked: the broker answered a publish with a negative confirm (an
	// internal error of the broker); the send may be retried.
	ErrNacked = errors.New("rabbitmq: broker nacked the message")
	// ErrUnroutable: with Config.Mandatory, no queue is bound for the
	// message's topic and the broker returned it.
	ErrUnroutable = errors.New("rabbitmq: no queue bound for the message (returned)")
	// ErrNoTopic: the message has no cap-msg-name header to route it by.
	ErrNoTopic = errors.New("rabbitmq: message has no cap-msg-name header")
)

// confirmBuffer is the capacity of a channel's confirm listener. The
// library's reader goroutine blocks on a full listener, so it is generous;
// a dedicated goroutine drains it at all times.
const confirmBuffer = 1024

// Send implements transport.Transport: it publishes msg and waits for the
// broker's confirm.
func (t *Transport) Send(ctx context.Context, msg *message.Message) error {
	errs := t.SendBatch(ctx, []*message.Message{msg})
	if errs == nil {
		return nil
	}
	return errs[0]
}

// SendBatch implements transport.Transport. It publishes all messages on one
// confirm-mode channel without waiting in between, then waits for the
// confirms, which it matches to the messages by their sequence numbers: a
// nacked, returned (with Config.Mandatory) or unconfirmed message fails on
// its own. Errors that mean the broker cannot be reached wrap
// transport.ErrUnavailable; the outcome of such a message is unknown, and a
// retry may deliver it twice.
func (t *Transport) SendBatch(ctx context.Context, msgs []*message.Message) []error {
	return t.PublishBatch(ctx, msgs)()
}

// PublishBatch implements transport.Pipeliner: it publishes like SendBatch
// and returns the wait for the confirms, so that the caller may publish
// more meanwhile.
func (t *Transport) PublishBatch(ctx context.Context, msgs []*message.Message) (wait func() []error) {
	if len(msgs) == 0 {
		return func() []error { return nil }
	}
	errs := make([]error, len(msgs))
	failed := false
	fail := func(i int, err error) {
		errs[i] = err
		failed = true
	}
	failRest := func(from int, err error) {
		for i := from; i < len(msgs); i++ {
			if errs[i] == nil {
				fail(i, err)
			}
		}
	}
	done := func() []error { return errs }
	if t.isClosed() {
		failRest(0, fmt.Errorf("rabbitmq: send: %w", transport.ErrClosed))
		return done
	}

	pc, err := t.pool.acquire(ctx)
	if err != nil {
		failRest(0, err)
		return done
	}
	waiters := make([]*waiter, len(msgs))
	for i, m := range msgs {
		w, err := pc.publish(ctx, t.exchange, t.cfg.Mandatory, m)
		if err != nil {
			fail(i, err)
			if pc.isDead() || ctx.Err() != nil {
				failRest(i+1, err)
				break
			}
			continue
		}
		waiters[i] = w
	}
	t.pool.release(pc)
	return func() []error { return t.awaitConfirms(ctx, waiters, errs, failed) }
}

// awaitConfirms waits for the confirms of a published batch; errs holds the
// publish errors already, failed whether there is one.
func (t *Transport) awaitConfirms(ctx context.Context, waiters []*waiter, errs []error, failed bool) []error {
	fail := func(i int, err error) {
		errs[i] = err
		failed = true
	}
	timer := time.NewTimer(t.cfg.ConfirmTimeout)
	defer timer.Stop()
	for i, w := range waiters {
		if w == nil {
			continue
		}
		select {
		case err := <-w.result:
			if err != nil {
				fail(i, err)
			}
		case <-ctx.Done():
			fail(i, fmt.Errorf("rabbitmq: waiting for the publisher confirm: %w", ctx.Err()))
		case <-timer.C:
			// Every later message of the batch waited as long: fail them
			// all without waiting again.
			err := fmt.Errorf("rabbitmq: %w: no publisher confirm within %s", transport.ErrUnavailable, t.cfg.ConfirmTimeout)
			for j := i; j < len(waiters); j++ {
				if waiters[j] == nil {
					continue
				}
				select {
				case e := <-waiters[j].result:
					if e != nil {
						fail(j, e)
					}
				default:
					fail(j, err)
				}
			}
			return errs
		}
	}
	if !failed {
		return nil
	}
	return errs
}

// waiter receives the outcome of one published message.
type waiter struct {
	id     string
	result chan error // capacity 1, written once
}

// pubChannel is a confirm-mode channel. One sender at a time publishes on
// it (the pool hands it out exclusively), so the sequence number of each
// publish is known in advance; confirms are matched to waiters by a
// goroutine that runs for the channel's life.
type pubChannel struct {
	conn *amqp.Connection
	ch   *amqp.Channel

	mu       sync.Mutex
	pending  map[uint64]*waiter
	returned map[string]int // message ids returned and not yet confirmed
	dead     bool
	deadCh   chan struct{}
}

func openPubChannel(conn *amqp.Connection, exchange string, mandatory bool) (*pubChannel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, unavailable("open channel", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, unavailable("confirm mode", err)
	}
	// Declared on every publish channel, as CAP does, so that a publish never
	// hits a missing exchange (which would close the channel).
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		_ = ch.Close()
		return nil, unavailable("declare exchange "+exchange, err)
	}
	pc := &pubChannel{
		conn:     conn,
		ch:       ch,
		pending:  make(map[uint64]*waiter),
		returned: make(map[string]int),
		deadCh:   make(chan struct{}),
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, confirmBuffer))
	var returns chan amqp.Return
	if mandatory {
		// Unbuffered on purpose: the broker sends basic.return before the
		// basic.ack of the same message, and the library's reader cannot
		// pass on the ack before this goroutine has taken the return, so the
		// return is always recorded before the ack is looked at.
		returns = ch.NotifyReturn(make(chan amqp.Return))
	}
	go pc.dispatch(confirms, returns, closed)
	return pc, nil
}

// dispatch resolves waiters from the channel's confirms until it closes,
// then fails the ones left.
func (pc *pubChannel) dispatch(confirms <-chan amqp.Confirmation, returns <-chan amqp.Return, closed <-chan *amqp.Error) {
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			pc.mu.Lock()
			pc.returned[r.MessageId]++
			pc.mu.Unlock()
		case c, ok := <-confirms:
			if !ok {
				var reason error = amqp.ErrClosed
				select {
				case e := <-closed:
					if e != nil {
						reason = e
					}
				default:
				}
				pc.kill(fmt.Errorf("rabbitmq: %w: channel closed before the broker confirmed the message: %w", transport.ErrUnavailable, reason))
				return
			}
			pc.resolve(c)
		}
	}
}

func (pc *pubChannel) resolve(c amqp.Confirmation) {
	pc.mu.Lock()
	w := pc.pending[c.DeliveryTag]
	delete(pc.pending, c.DeliveryTag)
	var err error
	if w != nil {
		switch {
		case !c.Ack:
			err = ErrNacked
		case pc.returned[w.id] > 0:
			if pc.returned[w.id]--; pc.returned[w.id] == 0 {
				delete(pc.returned, w.id)
			}
			err = ErrUnroutable
		}
	}
	pc.mu.Unlock()
	if w != nil {
		w.result <- err
	}
}

// kill marks the channel dead and fails every waiter.
func (pc *pubChannel) kill(err error) {
	pc.mu.Lock()
	pending := pc.pending
	pc.pending = nil
	if !pc.dead {
		pc.dead = true
		close(pc.deadCh)
	}
	pc.mu.Unlock()
	for _, w := range pending {
		w.result <- err
	}
}

func (pc *pubChannel) isDead() bool {
	select {
	case <-pc.deadCh:
		return true
	default:
		return pc.ch.IsClosed()
	}
}

// publish sends one message and returns the waiter of its confirm. The
// caller holds the channel exclusively.
func (pc *pubChannel) publish(ctx context.Context, exchange string, mandatory bool, m *message.Message) (*waiter, error) {
	topic := m.Name()
	if topic == "" {
		return nil, ErrNoTopic
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Taken without pc.mu: the library's reader may hold the sequence lock
	// while it hands a confirm to dispatch, which needs pc.mu.
	seq := pc.ch.GetNextPublishSeqNo()
	w := &waiter{id: m.ID(), result: make(chan error, 1)}
	pc.mu.Lock()
	if pc.dead {
		pc.mu.Unlock()
		return nil, fmt.Errorf("rabbitmq: publish: %w: channel closed", transport.ErrUnavailable)
	}
	pc.pending[seq] = w
	pc.mu.Unlock()

	err := pc.ch.PublishWithContext(ctx, exchange, topic, mandatory, false, amqp.Publishing{
		Headers:      toTable(m.Headers),
		MessageId:    m.ID(),
		DeliveryMode: amqp.Persistent,
		Body:         m.Body,
	})
	if err != nil {
		pc.mu.Lock()
		if pc.pending[seq] == w {
			delete(pc.pending, seq)
		}
		pc.mu.Unlock()
		return nil, unavailable("publish", err)
	}
	return w, nil
}

// pool lends confirm-mode channels of the publish connection to senders,
// one sender per channel at a time, at most size channels in all. A sender
// holds a channel only while it publishes, not while it waits for confirms.
type pool struct {
	conns     *connManager
	exchange  string
	mandatory bool
	tokens    chan struct{}

	mu   sync.Mutex
	idle []*pubChannel
}

func newPool(conns *connManager, exchange string, mandatory bool, size int) *pool {
	return &pool{conns: conns, exchange: exchange, mandatory: mandatory, tokens: make(chan struct{}, size)}
}

func (p *pool) acquire(ctx context.Context) (*pubChannel, error) {
	select {
	case p.tokens <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Asked first, so that sends fail fast while the connection is down or
	// blocked by the broker, even with idle channels at hand.
	conn, err := p.conns.get(ctx)
	if err != nil {
		<-p.tokens
		return nil, unavailable("send", err)
	}
	p.mu.Lock()
	for len(p.idle) > 0 {
		pc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if pc.conn == conn && !pc.isDead() {
			p.mu.Unlock()
			return pc, nil
		}
		// A channel of a former connection is closed with it.
		_ = pc.ch.Close()
	}
	p.mu.Unlock()
	pc, err := openPubChannel(conn, p.exchange, p.mandatory)
	if err != nil {
		<-p.tokens
		return nil, err
	}
	return pc, nil
}

func (p *pool) release(pc *pubChannel) {
	if !pc.isDead() {
		p.mu.Lock()
		p.idle = append(p.idle, pc)
		p.mu.Unlock()
	}
	<-p.tokens
}

var _ transport.Pipeliner = (*Transport)(nil)
