package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
)

// Defaults used for the zero values of Config.
const (
	// DefaultBroker is the bootstrap address used when Config.Brokers is
	// empty.
	DefaultBroker = "localhost:9092"
	// DefaultTopicRefreshInterval is how often a consumer with a wildcard
	// lists the cluster's topics to pick up new matching ones.
	DefaultTopicRefreshInterval = 10 * time.Second
	// DefaultCommitInterval is how often a consumer commits the offsets its
	// acknowledgements allow.
	DefaultCommitInterval = 100 * time.Millisecond
	// DefaultProduceTimeout bounds one produce request, CAP's
	// message.timeout.ms (5 s).
	DefaultProduceTimeout = 5 * time.Second
	// DefaultMaxBatchBytes bounds the bytes of the records sent in one
	// produce request, below the broker's default message.max.bytes (1 MiB).
	DefaultMaxBatchBytes = 900 << 10
	// DefaultDialTimeout bounds one connection attempt.
	DefaultDialTimeout = 5 * time.Second
	// DefaultHeartbeatInterval is the consumer group heartbeat interval.
	DefaultHeartbeatInterval = 3 * time.Second
	// DefaultSessionTimeout is how long the coordinator waits without a
	// heartbeat before it gives a consumer's partitions to the others.
	DefaultSessionTimeout = 30 * time.Second
	// DefaultRebalanceTimeout is how long the coordinator waits for the
	// members to rejoin during a rebalance.
	DefaultRebalanceTimeout = 30 * time.Second
	// DefaultRetryDelay is the pause before a consumer rejoins its group
	// after an error, and the first pause of a partition reader after a
	// failed fetch.
	DefaultRetryDelay = time.Second
	// DefaultFetchMaxWait bounds the broker's wait for new records in one
	// fetch (records are returned as soon as there are some).
	DefaultFetchMaxWait = time.Second
	// DefaultFetchMaxBytes bounds the bytes one fetch returns.
	DefaultFetchMaxBytes = 1 << 20
)

// ErrConfig reports a Config that cannot work.
var ErrConfig = errors.New("kafka: invalid config")

// Acks is the acknowledgement a produce request waits for.
type Acks int

// The acknowledgements a produce request can wait for. The zero value is
// AcksAll.
const (
	// AcksAll waits until every in-sync replica has the records (acks=all).
	AcksAll Acks = iota
	// AcksLeader waits for the partition leader only (acks=1).
	AcksLeader
	// AcksNone does not wait (acks=0); a send then succeeds as soon as the
	// request is written, and records can be lost.
	AcksNone
)

// Config configures a Transport. Zero values mean the documented defaults,
// which are CAP's where CAP has one.
type Config struct {
	// Brokers lists bootstrap addresses ("host:port") of the cluster; the
	// rest of the cluster is discovered from them. Defaults to
	// []string{DefaultBroker}.
	Brokers []string
	// TLS, when set, makes every connection use TLS with this
	// configuration.
	TLS *tls.Config
	// SASL, when set, authenticates every connection, for example with
	// github.com/segmentio/kafka-go/sasl/plain.Mechanism or
	// sasl/scram.Mechanism.
	SASL sasl.Mechanism
	// ClientID is the client.id shown in the broker's logs and quotas.
	// Defaults to the executable's name.
	ClientID string

	// NumPartitions is the partition count of the topics the transport
	// creates. 0 or -1 leave it to the broker (num.partitions).
	NumPartitions int
	// ReplicationFactor is the replication factor of the topics the
	// transport creates. 0 or -1 leave it to the broker
	// (default.replication.factor).
	ReplicationFactor int
	// DisableTopicCreation leaves topic creation to the operator (CAP's
	// allow.auto.create.topics=false): the transport never sends
	// CreateTopics, Subscribe fails with ErrUnknownTopic for a topic that
	// does not exist and a send to such a topic fails with the same error,
	// unless the broker creates topics itself (auto.create.topics.enable).
	DisableTopicCreation bool
	// TopicRefreshInterval is how often a consumer whose topics hold a
	// wildcard lists the cluster's topics; a matching topic created later is
	// consumed within about this period. Defaults to
	// DefaultTopicRefreshInterval.
	TopicRefreshInterval time.Duration

	// RequiredAcks is the acknowledgement a send waits for. The zero value
	// is AcksAll.
	RequiredAcks Acks
	// Compression compresses produced record batches. The zero value sends
	// them uncompressed.
	Compression kafkago.Compression
	// ProduceTimeout bounds one produce request; a send that times out
	// fails with transport.ErrUnavailable. Defaults to
	// DefaultProduceTimeout.
	ProduceTimeout time.Duration
	// MaxBatchBytes bounds the record bytes of one produce request: a batch
	// is split into requests of at most this size per partition. Defaults
	// to DefaultMaxBatchBytes.
	MaxBatchBytes int

	// CommitInterval is how often a consumer commits the offsets its
	// acknowledgements allow (and once more when it closes or a rebalance
	// takes its partitions). Defaults to DefaultCommitInterval.
	CommitInterval time.Duration
	// HeartbeatInterval is the group heartbeat interval; a rebalance is
	// noticed within it. Defaults to DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// SessionTimeout is how long the coordinator waits for a silent
	// consumer (a crashed process) before its partitions go to the others.
	// Defaults to DefaultSessionTimeout.
	SessionTimeout time.Duration
	// RebalanceTimeout is how long the coordinator waits for the members
	// to rejoin during a rebalance. Defaults to DefaultRebalanceTimeout.
	RebalanceTimeout time.Duration
	// RetryDelay is the pause before a consumer rejoins its group after an
	// error. Defaults to DefaultRetryDelay.
	RetryDelay time.Duration
	// FetchMaxWait bounds the broker's wait in one fetch when a partition
	// has no new records. Defaults to DefaultFetchMaxWait.
	FetchMaxWait time.Duration
	// FetchMaxBytes bounds the bytes of one fetch; it also bounds the size
	// of a message a consumer can read. Defaults to DefaultFetchMaxBytes.
	FetchMaxBytes int

	// DialTimeout bounds one connection attempt, TLS and SASL included.
	// Defaults to DefaultDialTimeout.
	DialTimeout time.Duration
	// Dial, when set, opens the network connections instead of net.Dialer
	// (for a proxy, or tests).
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// Logger receives consumer group changes and errors. Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a copy of c with its zero values replaced by the
// defaults, or an error for values that cannot work.
func (c Config) withDefaults() (Config, error) {
	if len(c.Brokers) == 0 {
		c.Brokers = []string{DefaultBroker}
	}
	c.Brokers = append([]string(nil), c.Brokers...)
	for _, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return c, fmt.Errorf("%w: broker %q: %w", ErrConfig, b, err)
		}
	}
	if c.ClientID == "" {
		c.ClientID = "cap"
		if exe, err := os.Executable(); err == nil {
			c.ClientID = filepath.Base(exe)
		}
	}
	if c.NumPartitions == 0 || c.NumPartitions < -1 {
		if c.NumPartitions < -1 {
			return c, fmt.Errorf("%w: NumPartitions %d", ErrConfig, c.NumPartitions)
		}
		c.NumPartitions = -1
	}
	if c.ReplicationFactor == 0 || c.ReplicationFactor < -1 {
		if c.ReplicationFactor < -1 {
			return c, fmt.Errorf("%w: ReplicationFactor %d", ErrConfig, c.ReplicationFactor)
		}
		c.ReplicationFactor = -1
	}
	if c.TopicRefreshInterval <= 0 {
		c.TopicRefreshInterval = DefaultTopicRefreshInterval
	}
	if c.RequiredAcks < AcksAll || c.RequiredAcks > AcksNone {
		return c, fmt.Errorf("%w: RequiredAcks %d", ErrConfig, c.RequiredAcks)
	}
	if c.ProduceTimeout <= 0 {
		c.ProduceTimeout = DefaultProduceTimeout
	}
	if c.MaxBatchBytes < 0 {
		return c, fmt.Errorf("%w: MaxBatchBytes %d is negative", ErrConfig, c.MaxBatchBytes)
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = DefaultCommitInterval
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.RebalanceTimeout <= 0 {
		c.RebalanceTimeout = DefaultRebalanceTimeout
	}
	if c.RetryDelay <= 0 {
		c.RetryDelay = DefaultRetryDelay
	}
	if c.FetchMaxWait <= 0 {
		c.FetchMaxWait = DefaultFetchMaxWait
	}
	if c.FetchMaxBytes <= 0 {
		c.FetchMaxBytes = DefaultFetchMaxBytes
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// requiredAcks returns kafka-go's value for c.RequiredAcks.
func (c Config) requiredAcks() kafkago.RequiredAcks {
	switch c.RequiredAcks {
	case AcksLeader:
		return kafkago.RequireOne
	case AcksNone:
		return kafkago.RequireNone
	default:
		return kafkago.RequireAll
	}
}
