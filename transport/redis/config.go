package redis

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Defaults used for the zero values of Config.
const (
	// DefaultURL is the server address used when Config.URL and
	// Config.Options are empty.
	DefaultURL = "redis://127.0.0.1:6379/0"
	// DefaultReadCount is the COUNT of each XREADGROUP and XAUTOCLAIM, CAP's
	// StreamEntriesCount.
	DefaultReadCount = 10
	// DefaultBlock is the BLOCK of each XREADGROUP: how long a read waits
	// for new entries before the consumer looks at its streams again.
	DefaultBlock = time.Second
	// DefaultClaimIdle is how long an entry stays pending (delivered, not
	// acknowledged) before another consumer of the group takes it over with
	// XAUTOCLAIM. It matches the bus's default lease.
	DefaultClaimIdle = 30 * time.Second
	// DefaultClaimInterval is how often a consumer looks for entries
	// pending longer than ClaimIdle, or given back by a consumer that
	// rejected them or closed. One XAUTOCLAIM per stream looks at a few
	// entries of the group's pending list only.
	DefaultClaimInterval = time.Second
	// DefaultWildcardRefresh is how often a consumer with wildcard topics
	// scans for new stream keys that match them.
	DefaultWildcardRefresh = 5 * time.Second
	// DefaultReconnectDelay is the first pause after a failed read.
	DefaultReconnectDelay = 100 * time.Millisecond
	// DefaultMaxReconnectDelay caps the pause between failed reads.
	DefaultMaxReconnectDelay = 5 * time.Second
)

// ErrConfig reports a Config that cannot work.
var ErrConfig = errors.New("redis: invalid config")

// Config configures a Transport. Zero values mean the documented defaults,
// which are CAP's where CAP has one.
type Config struct {
	// URL is the server's address: redis://[user:password@]host:port/db, or
	// rediss:// for TLS (the forms of go-redis's ParseURL). Defaults to
	// DefaultURL. Ignored when Options is set.
	URL string
	// Options configures the go-redis client instead of URL, for settings a
	// URL cannot hold (TLS config, dialer, credentials provider). It is
	// copied. Its MaxRetries and DialerRetries, when zero, become -1 (no
	// retry) and 1, as for a URL: a command fails at once while Redis is
	// down, because the bus retries sends itself and a failed ack only
	// leaves the entry pending for a later claim, while go-redis's own
	// retries would hold the bus's goroutines for seconds. Redis Cluster is
	// not supported: one XREADGROUP reads all the
	// streams of a consumer, which a cluster refuses across hash slots.
	Options *goredis.Options

	// ReadCount is the COUNT of each XREADGROUP and XAUTOCLAIM. Defaults to
	// DefaultReadCount (CAP's StreamEntriesCount, 10).
	ReadCount int
	// Block is the BLOCK of each XREADGROUP. A new entry is returned at
	// once; Block only bounds how long a consumer waits before it reads
	// again. Defaults to DefaultBlock.
	Block time.Duration
	// ClaimIdle is how long an entry stays pending with a consumer before
	// another consumer of the group takes it over (XAUTOCLAIM), so that the
	// entries of a crashed instance come back. Defaults to
	// DefaultClaimIdle. Rejected entries and the unacknowledged entries of
	// a closed consumer do not wait for it: they are marked idle at once.
	ClaimIdle time.Duration
	// ClaimInterval is how often a consumer runs XAUTOCLAIM. Defaults to
	// DefaultClaimInterval, or ClaimIdle when that is shorter.
	ClaimInterval time.Duration
	// WildcardRefresh is how often a consumer subscribed with wildcards
	// scans for new stream keys that match them. Defaults to
	// DefaultWildcardRefresh.
	WildcardRefresh time.Duration

	// MaxLen, when positive, trims every stream a message is sent to to
	// about this many entries (XADD MAXLEN ~). Trimming removes entries
	// whether or not every group has read them. Zero keeps every entry, as
	// CAP does.
	MaxLen int64
	// MaxAge, when positive, trims entries older than this from every
	// stream a message is sent to (XADD MINID ~ with the sender's clock).
	// Zero keeps every entry, as CAP does.
	MaxAge time.Duration

	// ConsumerName prefixes the name of each consumer in its group; a
	// random suffix makes every consumer's name unique. Defaults to the
	// host name.
	ConsumerName string
	// ReconnectDelay is the first pause after a read fails; it doubles up
	// to MaxReconnectDelay. Defaults to DefaultReconnectDelay.
	ReconnectDelay time.Duration
	// MaxReconnectDelay caps the pause after failed reads. Defaults to
	// DefaultMaxReconnectDelay.
	MaxReconnectDelay time.Duration

	// Logger receives connection losses and malformed entries. Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a copy of c with its zero values replaced by the
// defaults and the client options it describes, or an error for values
// that cannot work.
func (c Config) withDefaults() (Config, *goredis.Options, error) {
	var opts *goredis.Options
	if c.Options != nil {
		o := *c.Options
		opts = &o
	} else {
		if c.URL == "" {
			c.URL = DefaultURL
		}
		o, err := goredis.ParseURL(c.URL)
		if err != nil {
			return c, nil, fmt.Errorf("%w: URL: %w", ErrConfig, err)
		}
		opts = o
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = -1
	}
	if opts.DialerRetries == 0 {
		opts.DialerRetries = 1
	}
	if c.ReadCount < 0 || c.Block < 0 || c.ClaimIdle < 0 || c.ClaimInterval < 0 || c.WildcardRefresh < 0 ||
		c.MaxLen < 0 || c.MaxAge < 0 {
		return c, nil, fmt.Errorf("%w: negative count or duration", ErrConfig)
	}
	if c.ReadCount == 0 {
		c.ReadCount = DefaultReadCount
	}
	if c.Block == 0 {
		c.Block = DefaultBlock
	}
	if c.Block < time.Millisecond {
		return c, nil, fmt.Errorf("%w: Block %v is below Redis's 1 ms", ErrConfig, c.Block)
	}
	if c.ClaimIdle == 0 {
		c.ClaimIdle = DefaultClaimIdle
	}
	if c.ClaimInterval == 0 {
		c.ClaimInterval = min(DefaultClaimInterval, c.ClaimIdle)
	}
	if c.WildcardRefresh == 0 {
		c.WildcardRefresh = DefaultWildcardRefresh
	}
	if c.ConsumerName == "" {
		c.ConsumerName, _ = os.Hostname()
		if c.ConsumerName == "" {
			c.ConsumerName = "cap"
		}
	}
	if c.ReconnectDelay <= 0 {
		c.ReconnectDelay = DefaultReconnectDelay
	}
	if c.MaxReconnectDelay <= 0 {
		c.MaxReconnectDelay = DefaultMaxReconnectDelay
	}
	c.MaxReconnectDelay = max(c.MaxReconnectDelay, c.ReconnectDelay)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, opts, nil
}
