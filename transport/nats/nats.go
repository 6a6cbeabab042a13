package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/go-cap/cap/internal/consumerset"
	"github.com/go-cap/cap/transport"
)

// Errors the transport returns besides those of package transport. Callers
// test them with errors.Is.
var (
	// ErrNoTopic: the message has no cap-msg-name header to publish it by.
	ErrNoTopic = errors.New("nats: message has no cap-msg-name header")
	// ErrInvalidTopic: a topic cannot be mapped to a NATS subject and stream
	// (an empty word, white space, NATS's own '>' or a wildcard as its first
	// word, which names the stream).
	ErrInvalidTopic = errors.New("nats: invalid topic")
	// ErrNoStream: no stream captures the subject of a published message.
	// It also wraps transport.ErrUnavailable, because the stream appears
	// once a subscriber of the topic has started, and a retry then succeeds.
	ErrNoStream = errors.New("nats: no stream captures the subject")
)

// Transport is a transport.Transport on NATS JetStream. It is safe for
// concurrent use.
type Transport struct {
	cfg Config
	log *slog.Logger
	nc  *nats.Conn
	js  jetstream.JetStream

	streamMu sync.Mutex // serialises this transport's changes of streams

	consumers *consumerset.Set[*consumer] // open consumers; closed by Close
}

var (
	_ transport.Transport = (*Transport)(nil)
	_ transport.Pipeliner = (*Transport)(nil)
	_ transport.Namer     = (*Transport)(nil)
	_ transport.Delivery  = (*Delivery)(nil)
)

// New returns a transport for cfg. It connects in the background and
// reconnects forever, so New succeeds while the server is down; Send and
// Subscribe then fail with an error wrapping transport.ErrUnavailable until
// the connection is up. New fails only for a config that cannot work
// (ErrConfig).
func New(cfg Config) (*Transport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &Transport{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "nats"),
		consumers: consumerset.New[*consumer](),
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(cfg.DialTimeout),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.ReconnectWait),
		// No client-side buffer while disconnected: a publish then fails at
		// once with ErrUnavailable instead of waiting for a reconnection
		// the caller knows nothing about.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if !t.isClosed() {
				t.log.Warn("nats: connection lost, reconnecting", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			t.log.Info("nats: reconnected", "url", nc.ConnectedUrlRedacted())
		}),
	}
	opts = append(opts, cfg.Options...)
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: connect: %w", ErrConfig, err)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.MaxAsyncPending),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout),
		jetstream.WithDefaultTimeout(cfg.RequestTimeout),
	)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%w: jetstream: %w", ErrConfig, err)
	}
	t.nc, t.js = nc, js
	return t, nil
}

// Name implements transport.Namer: CAP's name of its NATS transport.
func (t *Transport) Name() string { return "NATS JetStream" }

// Conn returns the NATS connection, for uses the transport does not cover.
// Closing it breaks the transport.
func (t *Transport) Conn() *nats.Conn { return t.nc }

// JetStream returns the JetStream context the transport works with.
func (t *Transport) JetStream() jetstream.JetStream { return t.js }

// Close implements transport.Transport: it stops the consumers (their
// unacknowledged deliveries are negatively acknowledged, so they return
// at once), waits for outstanding publishes up to Config.PublishTimeout
// and closes the connection. It is idempotent.
func (t *Transport) Close() error {
	consumers, first := t.consumers.Close()
	if !first {
		return nil
	}
	for _, c := range consumers {
		_ = c.Close()
	}
	t.nc.Close()
	return nil
}

func (t *Transport) isClosed() bool { return t.consumers.IsClosed() }

func (t *Transport) addConsumer(c *consumer) bool { return t.consumers.Add(c) }

func (t *Transport) removeConsumer(c *consumer) { t.consumers.Remove(c) }

// ready fails fast while the connection is down.
func (t *Transport) ready(op string) error {
	if t.isClosed() {
		return fmt.Errorf("nats: %s: %w", op, transport.ErrClosed)
	}
	if !t.nc.IsConnected() {
		return fmt.Errorf("nats: %s: %w: %s", op, transport.ErrUnavailable, t.nc.Status())
	}
	return nil
}

// classify wraps errors that mean the server cannot be reached, or cannot
// serve JetStream now, with transport.ErrUnavailable; others are returned
// as they are. ctx is the caller's: its own end is not the server's fault.
func (t *Transport) classify(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, transport.ErrUnavailable) || errors.Is(err, transport.ErrClosed) {
		return fmt.Errorf("nats: %s: %w", op, err)
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return fmt.Errorf("nats: %s: %w", op, err)
	}
	if errors.Is(err, nats.ErrConnectionClosed) && t.isClosed() {
		return fmt.Errorf("nats: %s: %w: %w", op, transport.ErrClosed, err)
	}
	switch {
	case errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrNoServers),
		errors.Is(err, nats.ErrTimeout),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, jetstream.ErrTooManyStalledMsgs),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled),
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
		errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("nats: %s: %w: %w", op, transport.ErrUnavailable, err)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 503 {
		return fmt.Errorf("nats: %s: %w: %w", op, transport.ErrUnavailable, err)
	}
	return fmt.Errorf("nats: %s: %w", op, err)
}

// Check implements transport.Checker: the connection to the server is up.
func (t *Transport) Check(context.Context) error {
	if t.isClosed() {
		return transport.ErrClosed
	}
	if st := t.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("%w: nats: connection %s", transport.ErrUnavailable, st)
	}
	return nil
}
