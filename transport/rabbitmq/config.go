package rabbitmq

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Defaults used for the zero values of Config.
const (
	// DefaultURL is the broker address used when Config.URL is empty.
	DefaultURL = "amqp://guest:guest@localhost:5672/"
	// DefaultExchangeName is CAP's exchange.
	DefaultExchangeName = "cap.default.router"
	// DefaultVersion is CAP's default message version; any other version is
	// appended to the exchange name.
	DefaultVersion = "v1"
	// DefaultMessageTTL is CAP's x-message-ttl: 10 days.
	DefaultMessageTTL = 864000000 * time.Millisecond
	// DefaultPrefetch is the number of unacknowledged deliveries a consumer
	// may hold. The bus stores what arrived meanwhile in one transaction of
	// up to cap.Options.BatchSize (100) rows and acks after it commits, so
	// the window must outlast a commit at the rate it takes: with 32, a
	// consumer at 1,000 msg/s on PostgreSQL ran out of window whenever a
	// commit took over 30 ms, and the queue grew.
	DefaultPrefetch = 128
	// DefaultPublishChannels is the size of the pool of confirm-mode
	// channels senders share.
	DefaultPublishChannels = 8
	// DefaultConfirmTimeout bounds the wait for a publisher confirm.
	DefaultConfirmTimeout = 30 * time.Second
	// DefaultDialTimeout bounds one connection attempt.
	DefaultDialTimeout = 5 * time.Second
	// DefaultHeartbeat is the AMQP heartbeat interval, which detects a dead
	// peer on a connection that is otherwise idle.
	DefaultHeartbeat = 10 * time.Second
	// DefaultReconnectDelay is the first pause between reconnection attempts.
	DefaultReconnectDelay = 100 * time.Millisecond
	// DefaultMaxReconnectDelay caps the pause between reconnection attempts.
	DefaultMaxReconnectDelay = 5 * time.Second
)

// ErrConfig reports a Config that cannot work.
var ErrConfig = errors.New("rabbitmq: invalid config")

// Config configures a Transport. Zero values mean the documented defaults,
// which are CAP's where CAP has one.
type Config struct {
	// URL is the broker's address, amqp:// or amqps:// (with the user,
	// password and virtual host in it). Defaults to DefaultURL.
	URL string
	// URLs lists further addresses of the same cluster. A connection tries
	// URL and then each of URLs in turn, starting with the one that worked
	// last.
	URLs []string
	// TLS configures amqps:// connections. Nil uses the system's roots and
	// the host name of the URL.
	TLS *tls.Config

	// ExchangeName is the topic exchange messages are published to.
	// Defaults to DefaultExchangeName ("cap.default.router").
	ExchangeName string
	// Version is the message version (cap.Options.Version). When it is not
	// "v1" the exchange is "{ExchangeName}.{Version}", as in CAP. Defaults
	// to DefaultVersion.
	Version string

	// Prefetch is the number of unacknowledged deliveries one consumer may
	// hold (basic.qos, per consumer). Defaults to DefaultPrefetch. The
	// consumer's memory holds up to this many message bodies: lower it for
	// messages of megabytes.
	Prefetch int
	// MessageTTL is the queues' x-message-ttl. Defaults to DefaultMessageTTL
	// (CAP's 10 days); a negative value leaves it out. Changing it for an
	// existing queue makes the broker refuse the declaration.
	MessageTTL time.Duration
	// QueueType sets x-queue-type, for example "quorum" or "classic". Empty
	// leaves it to the broker (classic).
	QueueType string
	// QueueArgs holds further queue arguments (x-queue-mode,
	// x-max-length...). They are added to, and may override, the ones above.
	QueueArgs amqp.Table

	// Mandatory publishes with the mandatory flag, so that a message no
	// queue is bound for fails to send with ErrUnroutable instead of being
	// dropped by the broker. The default, false, is CAP's behaviour: an
	// event nobody subscribes to is not an error.
	Mandatory bool
	// PublishChannels is the number of confirm-mode channels concurrent
	// senders share. Defaults to DefaultPublishChannels.
	PublishChannels int
	// ConfirmTimeout bounds the wait for the broker's confirm of a published
	// message; an unconfirmed message fails with ErrUnavailable. Defaults to
	// DefaultConfirmTimeout.
	ConfirmTimeout time.Duration

	// ConnectionName is shown by the broker's management tools, followed by
	// " publish" or " consume". Defaults to the executable's name.
	ConnectionName string
	// DialTimeout bounds one connection attempt. Defaults to
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// Heartbeat is the AMQP heartbeat interval. Defaults to DefaultHeartbeat.
	Heartbeat time.Duration
	// ReconnectDelay is the first pause between reconnection attempts; it
	// doubles up to MaxReconnectDelay. Defaults to DefaultReconnectDelay.
	ReconnectDelay time.Duration
	// MaxReconnectDelay caps the pause between reconnection attempts.
	// Defaults to DefaultMaxReconnectDelay.
	MaxReconnectDelay time.Duration

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
	for _, u := range append([]string{c.URL}, c.URLs...) {
		if _, err := amqp.ParseURI(u); err != nil {
			return c, fmt.Errorf("%w: URL %q: %w", ErrConfig, redact(u), err)
		}
	}
	if c.ExchangeName == "" {
		c.ExchangeName = DefaultExchangeName
	}
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.Prefetch < 0 || c.Prefetch > math.MaxUint16 {
		return c, fmt.Errorf("%w: Prefetch %d out of range 0..%d", ErrConfig, c.Prefetch, math.MaxUint16)
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.MessageTTL == 0 {
		c.MessageTTL = DefaultMessageTTL
	}
	if c.PublishChannels < 0 {
		return c, fmt.Errorf("%w: PublishChannels %d is negative", ErrConfig, c.PublishChannels)
	}
	if c.PublishChannels == 0 {
		c.PublishChannels = DefaultPublishChannels
	}
	if c.ConfirmTimeout <= 0 {
		c.ConfirmTimeout = DefaultConfirmTimeout
	}
	if c.ConnectionName == "" {
		c.ConnectionName = "cap"
		if exe, err := os.Executable(); err == nil {
			c.ConnectionName = filepath.Base(exe)
		}
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.ReconnectDelay <= 0 {
		c.ReconnectDelay = DefaultReconnectDelay
	}
	if c.MaxReconnectDelay <= 0 {
		c.MaxReconnectDelay = DefaultMaxReconnectDelay
	}
	if c.MaxReconnectDelay < c.ReconnectDelay {
		c.MaxReconnectDelay = c.ReconnectDelay
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// exchange returns the exchange name for the configured version, CAP's rule.
func (c Config) exchange() string {
	if c.Version == DefaultVersion {
		return c.ExchangeName
	}
	return c.ExchangeName + "." + c.Version
}

// queueArgs returns the arguments every queue is declared with.
func (c Config) queueArgs() amqp.Table {
	args := amqp.Table{}
	if c.MessageTTL > 0 {
		ms := c.MessageTTL.Milliseconds()
		// CAP sends an int (AMQP signed 32-bit); keep that type so that the
		// declarations of .NET and Go services of one group agree.
		if ms <= math.MaxInt32 {
			args["x-message-ttl"] = int32(ms)
		} else {
			args["x-message-ttl"] = ms
		}
	}
	if c.QueueType != "" {
		args["x-queue-type"] = c.QueueType
	}
	for k, v := range c.QueueArgs {
		args[k] = v
	}
	return args
}

// urls returns every address to try, URL first.
func (c Config) urls() []string { return append([]string{c.URL}, c.URLs...) }

// redact hides the password of an AMQP URL for error messages and logs.
func redact(u string) string {
	uri, err := amqp.ParseURI(u)
	if err != nil {
		return "(unparsable URL)"
	}
	uri.Password = ""
	if uri.Username != "" {
		uri.Password = "xxxxx"
	}
	return uri.String()
}
