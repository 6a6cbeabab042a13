package cap

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/transport"
)

// Defaults for the zero values of Options. Those that CAP has are CAP's.
const (
	DefaultVersion                    = "v1"
	DefaultSucceedMessageExpiredAfter = 24 * time.Hour
	DefaultFailedMessageExpiredAfter  = 15 * 24 * time.Hour
	DefaultFailedRetryCount           = retry.DefaultMaxRetries
	DefaultFailedRetryInterval        = retry.DefaultInterval
	DefaultCollectorCleaningInterval  = 5 * time.Minute
	DefaultPollInterval               = time.Second
	DefaultLease                      = 30 * time.Second
	DefaultBatchSize                  = 100
	DefaultSenders                    = 2
	DefaultConsumerThreadCount        = 1
	DefaultShutdownTimeout            = 10 * time.Second
	DefaultHeartbeatInterval          = 15 * time.Second
)

// MessageKind says whether a failure was a send or a handler.
type MessageKind int

// The kinds of FailedInfo, numbered as CAP's MessageType.
const (
	KindPublish   MessageKind = 0
	KindSubscribe MessageKind = 1
)

// FailedInfo describes a message that used up its retries, for
// Options.FailedThresholdCallback.
type FailedInfo struct {
	Kind    MessageKind
	Message *message.Message
	Err     error
}

// Options configures a Bus. The zero value of each field means the default
// named in its comment.
type Options struct {
	// DefaultGroup is the group of subscribers registered with an empty
	// group. Defaults to "cap.queue." + the program's name, lower-cased.
	DefaultGroup string
	// GroupNamePrefix, when set, makes every group "{prefix}.{group}".
	GroupNamePrefix string
	// TopicNamePrefix, when set, makes every published and subscribed topic
	// "{prefix}.{topic}".
	TopicNamePrefix string
	// Version isolates data and groups of different versions of a service:
	// it is written to every row, appended to every group name, and only
	// rows of this Version are dispatched. Defaults to "v1"; at most 20
	// characters.
	Version string

	// SucceedMessageExpiredAfter is how long a Succeeded message is kept.
	// Defaults to 24 hours.
	SucceedMessageExpiredAfter time.Duration
	// FailedMessageExpiredAfter is how long a Failed message is kept, from
	// when it was added. Defaults to 15 days.
	FailedMessageExpiredAfter time.Duration
	// FailedRetryCount is the number of failed attempts after which a
	// message stops being retried. Defaults to 50.
	FailedRetryCount int
	// FailedRetryInterval is the wait between retries after the first
	// three immediate attempts. Defaults to 60 seconds.
	FailedRetryInterval time.Duration
	// RetryPolicy replaces CAP's policy built from FailedRetryCount and
	// FailedRetryInterval, for sends and handlers. Subscribers may have
	// their own (see WithRetry).
	RetryPolicy retry.Policy
	// FailedThresholdCallback is called once for a message that used up
	// its retries, or that can never succeed (no subscriber, no CAP
	// headers, a body that does not decode).
	FailedThresholdCallback func(ctx context.Context, info FailedInfo)

	// PollInterval is how often each instance looks for due rows it was
	// not told about (rows committed with a plain tx.Commit on a storage
	// without notifications, rows of crashed instances). Defaults to 1 s.
	PollInterval time.Duration
	// Lease is how long a claimed row belongs to the instance that claimed
	// it; rows of a crashed instance are taken over when it ends. Leases of
	// running handlers are extended. Defaults to 30 s.
	Lease time.Duration
	// BatchSize is the number of rows claimed, sent and updated at once.
	// Defaults to 100.
	BatchSize int
	// Senders is the number of goroutines sending batches to the broker.
	// With a transport that awaits confirms in the background (RabbitMQ),
	// each sender keeps up to 16 × BatchSize messages, and at most 8 MiB of
	// them, published and unconfirmed. Defaults to 2.
	Senders int
	// ConsumerThreadCount is the number of broker consumers per group.
	// Defaults to 1.
	ConsumerThreadCount int
	// Workers is the number of handlers that run at once, across groups.
	// Defaults to GOMAXPROCS × 4.
	Workers int
	// StoreFirst stores every delivery in the Received table before its
	// handler runs. Without it, on a storage that implements
	// storage.ReceivedChecker (PostgreSQL, MySQL/MariaDB, SQL Server,
	// MongoDB, SQLite, in-memory), a plain
	// handler (Subscribe, not SubscribeTx) runs as soon as the consumer has
	// checked that the message is not stored already, and the message's
	// row is then written once, with the outcome, before the delivery is
	// acked: one write per message less and the handler sooner. The
	// difference: a copy of a message that arrives while the first copy's
	// handler runs on another instance is handled twice (at least once,
	// as always for plain handlers); with StoreFirst the second copy is
	// dropped unhandled. A handler still running after a sixth of Lease
	// (at most 5 s) has its row stored and its delivery acked then, so a
	// broker's redelivery timeout never fires. SubscribeTx handlers always
	// store first: their effect stays once per message.
	StoreFirst bool
	// CollectorCleaningInterval is how often expired rows are deleted.
	// Defaults to 5 minutes; negative disables the collector. On a storage
	// that implements storage.Leaser (PostgreSQL, MySQL, SQL Server,
	// SQLite, MongoDB, in-memory) one instance of those sharing the
	// database collects at a time, under a
	// lease of Lease renewed every third of it: Shutdown hands it over at
	// once, and the lease of an instance that died runs out.
	CollectorCleaningInterval time.Duration
	// HeartbeatInterval is how often a bus on a storage that implements
	// storage.NodeRegistry (PostgreSQL, MySQL, SQL Server, SQLite,
	// MongoDB, in-memory) records that it is alive, for Bus.Nodes and the
	// dashboard's nodes. Defaults to 15 s; negative disables the
	// heartbeat.
	HeartbeatInterval time.Duration
	// ShutdownTimeout bounds Shutdown when its context has no deadline.
	// Defaults to 10 s.
	ShutdownTimeout time.Duration

	// Serializer encodes payloads. Defaults to JSON.
	Serializer message.Serializer
	// CustomHeaders builds cap-msg-id and cap-msg-name for messages that
	// arrive without them (published by a producer that does not speak
	// CAP). Without it such messages are stored as Failed and acked.
	CustomHeaders transport.HeadersBuilder
	// InstanceID is written to cap-exec-instance-id. Defaults to the host
	// name, cut to 50 characters.
	InstanceID string
	// WorkerID is the snowflake worker id (0..1023) of message ids.
	// Defaults to CAP_WORKERID, else one derived from the host.
	WorkerID *int64
	// Logger receives the bus's logs. Defaults to slog.Default().
	Logger *slog.Logger

	// TracerProvider records the spans of each message: create (in the
	// publisher's transaction), send, receive and process, after
	// OpenTelemetry's messaging conventions. Defaults to the global one
	// (otel.GetTracerProvider, looked up at each message, so an SDK
	// installed after New is used); with no SDK installed no span is
	// started and nothing is allocated.
	TracerProvider trace.TracerProvider
	// MeterProvider records the bus's metrics (see the README's
	// Observability section). Defaults to the global one.
	MeterProvider metric.MeterProvider
	// Propagator writes the trace context into the headers of a published
	// message (traceparent, tracestate, baggage, as CAP's OpenTelemetry
	// package does) and reads it from received ones. Defaults to the
	// global one (otel.GetTextMapPropagator), which propagates nothing
	// until the application sets one, for example
	// propagation.NewCompositeTextMapPropagator(propagation.TraceContext{},
	// propagation.Baggage{}).
	Propagator propagation.TextMapPropagator
}

// withDefaults returns o with its zero values replaced and checks it.
func (o Options) withDefaults() (Options, error) {
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	if len(o.Version) > 20 {
		return o, fmt.Errorf("%w: Version %q is longer than 20 characters", ErrInvalidOptions, o.Version)
	}
	if o.DefaultGroup == "" {
		name := "app"
		if exe, err := os.Executable(); err == nil {
			name = strings.TrimSuffix(filepath.Base(exe), filepath.Ext(exe))
		}
		o.DefaultGroup = "cap.queue." + strings.ToLower(name)
	}
	orDefault(&o.SucceedMessageExpiredAfter, DefaultSucceedMessageExpiredAfter)
	orDefault(&o.FailedMessageExpiredAfter, DefaultFailedMessageExpiredAfter)
	orDefault(&o.FailedRetryCount, DefaultFailedRetryCount)
	orDefault(&o.FailedRetryInterval, DefaultFailedRetryInterval)
	if o.RetryPolicy == nil {
		o.RetryPolicy = retry.CAP{MaxRetries: o.FailedRetryCount, Interval: o.FailedRetryInterval}
	}
	orDefault(&o.PollInterval, DefaultPollInterval)
	orDefault(&o.Lease, DefaultLease)
	if o.Lease < 30*time.Millisecond {
		return o, fmt.Errorf("%w: Lease %v is too short", ErrInvalidOptions, o.Lease)
	}
	orDefault(&o.BatchSize, DefaultBatchSize)
	orDefault(&o.Senders, DefaultSenders)
	orDefault(&o.ConsumerThreadCount, DefaultConsumerThreadCount)
	orDefault(&o.Workers, runtime.GOMAXPROCS(0)*4)
	if o.CollectorCleaningInterval == 0 {
		o.CollectorCleaningInterval = DefaultCollectorCleaningInterval
	}
	orDefault(&o.ShutdownTimeout, DefaultShutdownTimeout)
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.Serializer == nil {
		o.Serializer = message.JSON{}
	}
	if o.InstanceID == "" {
		if h, err := os.Hostname(); err == nil {
			o.InstanceID = h
		}
	}
	if len(o.InstanceID) > 50 {
		o.InstanceID = o.InstanceID[:50]
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// groupName decorates a subscriber's group as CAP does:
// "{GroupNamePrefix}.{group}.{Version}".
func (o *Options) groupName(group string) string {
	if group == "" {
		group = o.DefaultGroup
	}
	if o.GroupNamePrefix != "" {
		group = o.GroupNamePrefix + "." + group
	}
	return group + "." + o.Version
}

// topicName applies TopicNamePrefix.
func (o *Options) topicName(topic string) string {
	if o.TopicNamePrefix != "" {
		return o.TopicNamePrefix + "." + topic
	}
	return topic
}

// orDefault replaces a zero or negative *v with d.
func orDefault[T int | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}
