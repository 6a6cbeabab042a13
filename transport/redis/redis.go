package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"

	goredis "github.com/redis/go-redis/v9"

	"github.com/go-cap/cap/internal/consumerset"
	"github.com/go-cap/cap/transport"
)

// Transport is a transport.Transport on Redis Streams. It is safe for
// concurrent use.
type Transport struct {
	cfg  Config
	opts *goredis.Options
	rdb  *goredis.Client
	log  *slog.Logger

	consumers *consumerset.Set[*consumer] // open consumers; closed by Close
}

var (
	_ transport.Transport = (*Transport)(nil)
	_ transport.Pipeliner = (*Transport)(nil)
	_ transport.Namer     = (*Transport)(nil)
	_ transport.Delivery  = (*Delivery)(nil)
)

// New returns a transport for cfg. It connects lazily: the first command
// dials. It fails only for a config that cannot work (ErrConfig).
func New(cfg Config) (*Transport, error) {
	cfg, opts, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Transport{
		cfg:       cfg,
		opts:      opts,
		rdb:       goredis.NewClient(opts),
		log:       cfg.Logger.With("component", "redis"),
		consumers: consumerset.New[*consumer](),
	}, nil
}

// Name implements transport.Namer: "RedisStreams", CAP's name.
func (t *Transport) Name() string { return "RedisStreams" }

// Client returns the go-redis client the transport sends and acknowledges
// with, for commands of the caller's own (XINFO, XTRIM). Do not close it.
func (t *Transport) Client() *goredis.Client { return t.rdb }

// Close implements transport.Transport: it closes the consumers (their
// unacknowledged entries are marked for other consumers of their group to
// take over) and the client. It is idempotent.
func (t *Transport) Close() error {
	consumers, first := t.consumers.Close()
	if !first {
		return nil
	}
	for _, c := range consumers {
		_ = c.Close()
	}
	return t.rdb.Close()
}

func (t *Transport) isClosed() bool { return t.consumers.IsClosed() }

func (t *Transport) addConsumer(c *consumer) bool { return t.consumers.Add(c) }

func (t *Transport) removeConsumer(c *consumer) { t.consumers.Remove(c) }

// nudgeGroup makes the transport's consumers of group run XAUTOCLAIM now.
func (t *Transport) nudgeGroup(group string) {
	t.consumers.Each(func(c *consumer) {
		if c.group == group {
			c.nudge()
		}
	})
}

// consumerName returns a name no other consumer uses.
func (t *Transport) consumerName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return t.cfg.ConsumerName + "-" + hex.EncodeToString(b[:])
}

// wrap returns err with the operation, wrapping transport.ErrUnavailable
// when it means Redis cannot be reached (network errors, a server that is
// loading its data or going down) and transport.ErrClosed after Close.
// Errors of the command itself (WRONGTYPE...) and of ctx are wrapped as
// they are.
func (t *Transport) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if t.isClosed() || errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("redis: %s: %w", op, transport.ErrClosed)
	}
	if unavailable(err) {
		return fmt.Errorf("redis: %s: %w: %w", op, transport.ErrUnavailable, err)
	}
	return fmt.Errorf("redis: %s: %w", op, err)
}

// unavailable reports whether err means the server cannot serve now.
func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		for _, p := range []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN"} {
			if goredis.HasErrorPrefix(err, p) {
				return true
			}
		}
		return false
	}
	var nerr net.Error
	return errors.As(err, &nerr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, goredis.ErrPoolTimeout)
}

// Check implements transport.Checker: the server answers a PING.
func (t *Transport) Check(ctx context.Context) error {
	if t.isClosed() {
		return transport.ErrClosed
	}
	if err := t.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w: redis: %v", transport.ErrUnavailable, err)
	}
	return nil
}
