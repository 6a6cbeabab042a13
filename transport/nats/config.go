package nats

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults used for the zero values of Config.
const (
	// DefaultURL is CAP's NATSOptions.Servers.
	DefaultURL = "nats://127.0.0.1:4222"
	// DefaultAckWait is CAP's AckWait: a delivery not acknowledged within it
	// is delivered again.
	DefaultAckWait = 30 * time.Second
	// DefaultMaxInFlight bounds the deliveries one consumer holds: pulled
	// from the server and not yet acknowledged or rejected.
	DefaultMaxInFlight = 128
	// DefaultPublishTimeout bounds the wait for JetStream's ack of a
	// published message (CAP waits 3 s).
	DefaultPublishTimeout = 5 * time.Second
	// DefaultMaxAsyncPending bounds the asynchronous publishes awaiting an
	// ack; a batch beyond it waits for acks before publishing more.
	DefaultMaxAsyncPending = 4000
	// DefaultDialTimeout is CAP's connection timeout.
	DefaultDialTimeout = 5 * time.Second
	// DefaultReconnectWait is the pause between reconnection attempts.
	DefaultReconnectWait = 250 * time.Millisecond
	// DefaultRequestTimeout bounds a JetStream API call (stream and consumer
	// management) whose context has no earlier deadline.
	DefaultRequestTimeout = 5 * time.Second
)

// ErrConfig reports a Config that cannot work.
var ErrConfig = errors.New("nats: invalid config")

// Config configures a Transport. Zero values mean the documented defaults,
// which are CAP's where CAP has one and CAP's choice does not lose messages.
type Config struct {
	// URL is the server's address; several comma-separated addresses of one
	// cluster may be given. Defaults to DefaultURL.
	URL string
	// Options are further client options (credentials, TLS...), applied
	// after the transport's own, so they may override them.
	Options []nats.Option
	// Name is the connection's name shown by the server's monitoring.
	// Defaults to the executable's name.
	Name string

	// Storage is the storage of the streams the transport creates. The zero
	// value is jetstream.FileStorage, which survives a server restart (CAP
	// creates memory streams, which lose their messages on a restart).
	Storage jetstream.StorageType
	// Replicas is the replica count of created streams. Defaults to 1.
	Replicas int
	// StreamConfig, if set, adjusts the config of a stream before the
	// transport creates it (CAP's StreamOptions). It is not applied to
	// streams that exist: their subject list is only extended.
	StreamConfig func(*jetstream.StreamConfig)
	// ConsumerConfig, if set, adjusts the config of each durable consumer
	// before it is created or updated (CAP's ConsumerOptions). Name,
	// Durable, FilterSubject and AckPolicy are reset afterwards.
	ConsumerConfig func(*jetstream.ConsumerConfig)
	// NoStreamCreation leaves streams alone: Subscribe then needs a stream
	// that captures its subjects already. The default, false, is CAP's
	// EnableSubscriberClientStreamAndSubjectCreation = true.
	NoStreamCreation bool

	// AckWait is the durable consumers' ack wait. Defaults to
	// DefaultAckWait (CAP's 30 s).
	AckWait time.Duration
	// NakDelay delays the redelivery of a rejected message. Defaults to 0:
	// at once, as CAP's Nak.
	NakDelay time.Duration
	// MaxInFlight bounds the deliveries one consumer (one Subscribe) holds at
	// once, pulled and not yet acknowledged or rejected, so that the bus's
	// worker pool is the only concurrency limit and no message waits in a
	// client buffer while its ack wait runs. Defaults to
	// DefaultMaxInFlight.
	MaxInFlight int

	// PublishTimeout bounds the wait for JetStream's ack of a publish.
	// Defaults to DefaultPublishTimeout.
	PublishTimeout time.Duration
	// MaxAsyncPending bounds the asynchronous publishes awaiting an ack.
	// Defaults to DefaultMaxAsyncPending.
	MaxAsyncPending int
	// RequestTimeout bounds the JetStream API calls of Subscribe when the
	// caller's context has no earlier deadline. Defaults to
	// DefaultRequestTimeout.
	RequestTimeout time.Duration

	// DialTimeout bounds one connection attempt. Defaults to
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// ReconnectWait is the pause between reconnection attempts; the client
	// reconnects forever (CAP does not reconnect at all). Defaults to
	// DefaultReconnectWait.
	ReconnectWait time.Duration

	// Logger receives connection losses and recoveries. Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a copy of c with its zero values replaced by the
// defaults, or an error for values that cannot work.
func (c Config) withDefaults() (Config, error) {
	if c.URL == "" {
		c.URL = DefaultURL
	}
	if c.Storage != jetstream.FileStorage && c.Storage != jetstream.MemoryStorage {
		return c, fmt.Errorf("%w: Storage %d", ErrConfig, c.Storage)
	}
	if c.Replicas < 0 {
		return c, fmt.Errorf("%w: Replicas %d is negative", ErrConfig, c.Replicas)
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.AckWait < 0 || c.NakDelay < 0 || c.PublishTimeout < 0 || c.RequestTimeout < 0 || c.DialTimeout < 0 || c.ReconnectWait < 0 {
		return c, fmt.Errorf("%w: negative duration", ErrConfig)
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxInFlight < 0 {
		return c, fmt.Errorf("%w: MaxInFlight %d is negative", ErrConfig, c.MaxInFlight)
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.MaxAsyncPending < 0 {
		return c, fmt.Errorf("%w: MaxAsyncPending %d is negative", ErrConfig, c.MaxAsyncPending)
	}
	if c.MaxAsyncPending == 0 {
		c.MaxAsyncPending = DefaultMaxAsyncPending
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ReconnectWait == 0 {
		c.ReconnectWait = DefaultReconnectWait
	}
	if c.Name == "" {
		c.Name = "cap"
		if exe, err := os.Executable(); err == nil {
			c.Name = filepath.Base(exe)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}
