package rabbitmq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-cap/cap/transport"
)

// connManager keeps one AMQP connection open: it dials the configured
// addresses in turn and, when the connection drops, dials again with a
// growing pause. Users take the current connection and watch for changes;
// they rebuild their channels themselves, because a channel never outlives
// its connection. The library's own experimental recovery is not used: it
// replays deliveries and confirms on new channels in ways that would hide
// the loss of in-flight messages from the caller.
type connManager struct {
	cfg  *Config
	role string // "publish" or "consume"
	log  *slog.Logger

	mu      sync.Mutex
	conn    *amqp.Connection // nil while down
	blocked string           // reason of a connection.blocked, "" when not blocked
	lastErr error            // why conn is nil
	changed chan struct{}    // closed and replaced on every change of conn

	first chan struct{} // closed once the first dial attempt has ended
	stop  chan struct{}
	done  chan struct{}
}

func newConnManager(cfg *Config, role string) *connManager {
	m := &connManager{
		cfg:     cfg,
		role:    role,
		log:     cfg.Logger.With("component", "rabbitmq", "connection", role),
		lastErr: errors.New("not connected yet"),
		changed: make(chan struct{}),
		first:   make(chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go m.run()
	return m
}

// run is the supervisor loop: dial, wait for the connection to drop, repeat.
func (m *connManager) run() {
	defer close(m.done)
	urls := m.cfg.urls()
	next := 0
	delay := m.cfg.ReconnectDelay
	lost := false // a connection was open before and dropped
	firstDone := false
	endFirst := func() {
		if !firstDone {
			firstDone = true
			close(m.first)
		}
	}
	defer endFirst()
	for {
		conn, idx, err := m.dial(urls, next)
		if err != nil {
			m.set(nil, err)
			endFirst()
			m.log.Warn("rabbitmq: connect failed", "error", err, "retry_in", delay)
			if !m.sleep(jitter(delay)) {
				return
			}
			delay = min(delay*2, m.cfg.MaxReconnectDelay)
			continue
		}
		select {
		case <-m.stop:
			_ = conn.Close()
			return
		default:
		}
		next = idx
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
		m.set(conn, nil)
		endFirst()
		if lost {
			m.log.Info("rabbitmq: reconnected", "url", redact(urls[idx]))
		}
		delay = m.cfg.ReconnectDelay
		if !m.watch(conn, closed, blocked) {
			return
		}
		lost = true
		// The first attempt after a drop comes at once: a connection closed
		// by the broker (an operator, a node restart) usually finds another
		// node, or the same one, ready.
	}
}

// watch follows an open connection until it closes (true) or the manager
// stops (false).
func (m *connManager) watch(conn *amqp.Connection, closed <-chan *amqp.Error, blocked <-chan amqp.Blocking) bool {
	for {
		select {
		case e := <-closed:
			err := errors.New("connection closed")
			if e != nil {
				err = fmt.Errorf("connection closed: %w", e)
			}
			m.set(nil, err)
			m.log.Warn("rabbitmq: connection lost, reconnecting", "error", err)
			return true
		case b, ok := <-blocked:
			if !ok {
				continue
			}
			m.mu.Lock()
			m.blocked = ""
			if b.Active {
				m.blocked = b.Reason
			}
			m.mu.Unlock()
			m.log.Warn("rabbitmq: connection flow control", "blocked", b.Active, "reason", b.Reason)
		case <-m.stop:
			_ = conn.Close()
			m.set(nil, transport.ErrClosed)
			return false
		}
	}
}

// dial tries every address once, starting at index from.
func (m *connManager) dial(urls []string, from int) (*amqp.Connection, int, error) {
	var errs []error
	for i := range urls {
		idx := (from + i) % len(urls)
		// A clone per dial: the library writes the host of the URL into the
		// config's ServerName, which would race between the two connections
		// and pin every later address to the first one's name.
		var tlsCfg *tls.Config
		if m.cfg.TLS != nil {
			tlsCfg = m.cfg.TLS.Clone()
		}
		props := amqp.NewConnectionProperties()
		props.SetClientConnectionName(m.cfg.ConnectionName + " " + m.role)
		conn, err := amqp.DialConfig(urls[idx], amqp.Config{
			Heartbeat:       m.cfg.Heartbeat,
			TLSClientConfig: tlsCfg,
			Properties:      props,
			Dial:            amqp.DefaultDial(m.cfg.DialTimeout),
		})
		if err == nil {
			return conn, idx, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", redact(urls[idx]), err))
	}
	return nil, from, errors.Join(errs...)
}

// sleep waits for d or the manager's stop; it reports whether to go on.
func (m *connManager) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-m.stop:
		return false
	}
}

func (m *connManager) set(conn *amqp.Connection, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conn = conn
	m.lastErr = err
	m.blocked = ""
	close(m.changed)
	m.changed = make(chan struct{})
}

// current returns the open connection (nil while down) and a channel closed
// at its next change.
func (m *connManager) current() (*amqp.Connection, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.conn, m.changed
}

// get returns the open connection. Before the first dial attempt has ended
// it waits for it (bounded by ctx); afterwards it fails fast with an error
// wrapping transport.ErrUnavailable while the connection is down.
func (m *connManager) get(ctx context.Context) (*amqp.Connection, error) {
	select {
	case <-m.first:
	case <-m.stop:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-m.stop:
		return nil, transport.ErrClosed
	default:
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn == nil {
		return nil, fmt.Errorf("%w: %w", transport.ErrUnavailable, m.lastErr)
	}
	if m.blocked != "" {
		return nil, fmt.Errorf("%w: broker blocked the connection: %s", transport.ErrUnavailable, m.blocked)
	}
	return m.conn, nil
}

// close stops the supervisor, which closes the connection.
func (m *connManager) close() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
}

// wait returns once the supervisor has stopped: at once, or after a dial in
// progress, which ends within DialTimeout.
func (m *connManager) wait() { <-m.done }

// jitter spreads reconnection attempts of many instances over ±25 %.
func jitter(d time.Duration) time.Duration {
	return d*3/4 + rand.N(d/2+1)
}

// unavailable wraps errors that mean the broker or the channel went away
// with transport.ErrUnavailable, so that callers retry them; other errors
// (access refused, precondition failed) are returned as they are.
func unavailable(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, transport.ErrUnavailable) || errors.Is(err, transport.ErrClosed) {
		return fmt.Errorf("rabbitmq: %s: %w", op, err)
	}
	if errors.Is(err, amqp.ErrClosed) {
		return fmt.Errorf("rabbitmq: %s: %w: %w", op, transport.ErrUnavailable, err)
	}
	var ae *amqp.Error
	// Connection forced (an operator or a stopping node), the broker's internal
	// errors and exhausted resources pass; refused arguments and access do not.
	if errors.As(err, &ae) && (ae.Code == amqp.ConnectionForced || ae.Code == amqp.InternalError || ae.Code == amqp.ResourceError) {
		return fmt.Errorf("rabbitmq: %s: %w: %w", op, transport.ErrUnavailable, err)
	}
	return fmt.Errorf("rabbitmq: %s: %w", op, err)
}

// check reports whether the connection is up and not blocked by the broker.
func (m *connManager) check() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.conn != nil && m.blocked != "":
		return fmt.Errorf("%w: the broker blocked the %s connection: %s", transport.ErrUnavailable, m.role, m.blocked)
	case m.conn != nil && !m.conn.IsClosed():
		return nil
	case m.lastErr != nil:
		return fmt.Errorf("%w: %s connection: %v", transport.ErrUnavailable, m.role, m.lastErr)
	default:
		return fmt.Errorf("%w: %s connection not open", transport.ErrUnavailable, m.role)
	}
}
