// Package kafka is the Kafka transport of the bus, on
// github.com/segmentio/kafka-go, with DotNetCore.CAP's mapping so that Go
// and .NET services exchange messages in both directions:
//
//   - the topic is the message's cap-msg-name; the consumer group's
//     group.id is the bus's group name;
//   - the record key is the cap-kafka-key header when it is set, else
//     cap-msg-id; records with one key go to one partition (CRC-32 of the
//     key modulo the partition count, librdkafka's default partitioner);
//   - every header is a record header holding its value as UTF-8 bytes (an
//     empty value, CAP's null, as a null header); the record value is the
//     body, untouched;
//   - a new group starts at the earliest offset of each partition
//     (auto.offset.reset=earliest);
//   - Subscribe creates the topics it names when they do not exist, with
//     Config.NumPartitions and Config.ReplicationFactor (the broker's
//     defaults by default), and ignores "already exists"; a send to a topic
//     that does not exist creates it the same way. Config.DisableTopicCreation
//     leaves the topics to the operator.
//
// # Wildcards
//
// CAP's * (one word) and # (one or more words) apply to topic names. Kafka
// consumer groups take a list of topics, so a consumer whose topics hold a
// wildcard lists the cluster's topics, joins its group with those that match
// (transport.Match) and lists them again every Config.TopicRefreshInterval;
// when the matching set changed it rejoins the group with the new set. A
// matching topic created later is thus consumed, from its first record,
// within about one refresh interval.
//
// # Acknowledgements
//
// Ack is an offset commit. The bus handles deliveries concurrently, so acks
// come out of order; a consumer keeps, per partition, the offsets it has
// delivered and commits the partition only up to the first delivery not yet
// acked (the watermark): a crash never skips an unhandled message, and what
// was acked above the watermark is delivered again after a restart (the bus
// recognises it as a duplicate). Commits are sent in batches every
// Config.CommitInterval, and once more when the consumer closes or a
// rebalance takes its partitions away. Reject keeps the watermark below the
// message and hands the message out again from Receive; if its partition
// moves away meanwhile, the new owner receives it from the committed offset.
//
// # Rebalances
//
// Each consumer is a member of its group (kafka-go's ConsumerGroup); the
// group's partitions are split among the members. When a member joins or
// leaves, the others stop reading, commit what their acks allow and rejoin;
// deliveries of the old generation that are acked afterwards are not
// committed (Ack returns ErrRevoked) and reach the partition's new owner
// again.
//
// # Sending
//
// kafka-go's Writer holds a lone synchronous write for its BatchTimeout. The
// transport does not use it: it groups a batch by partition and sends one
// produce request per partition (split at Config.MaxBatchBytes) at once, so
// a lone message leaves in one round trip and a backlog goes at the broker's
// speed. It implements transport.Pipeliner, so the bus publishes the next
// batch while the broker acknowledges the previous one. Produce requests
// wait for every in-sync replica by default (Config.RequiredAcks).
//
// When the broker cannot be reached, sends and subscriptions fail with an
// error wrapping transport.ErrUnavailable (within Config.DialTimeout or
// Config.ProduceTimeout), and consumers reconnect and resume by themselves
// when it comes back.
//
// # TLS and SASL
//
// Config.TLS and Config.SASL apply to every connection: sends, consumers,
// topic administration and Check. SASL works with kafka-go's mechanisms
// (sasl/plain for PLAIN, sasl/scram for SCRAM-SHA-256 and SCRAM-SHA-512),
// over TLS (SASL_SSL) or not (SASL_PLAINTEXT). Credentials the broker
// refuses, a broker certificate the TLS config does not trust and an
// access the broker denies fail sends, subscriptions and Check at once
// with an error wrapping ErrAuth, never transport.ErrUnavailable: waiting
// does not help until the configuration or the broker's users change.
package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/go-cap/cap/internal/consumerset"
	"github.com/go-cap/cap/transport"
)

// Errors of the transport, besides transport.ErrClosed and
// transport.ErrUnavailable.
var (
	// ErrNoTopic: the message has no cap-msg-name header.
	ErrNoTopic = errors.New("kafka: message has no cap-msg-name")
	// ErrUnknownTopic: the topic does not exist and the transport may not
	// create it (Config.DisableTopicCreation).
	ErrUnknownTopic = errors.New("kafka: unknown topic")
	// ErrRevoked: the delivery's partition was taken from this consumer by
	// a rebalance or the consumer closed; its offset is not committed and
	// the message is delivered again.
	ErrRevoked = errors.New("kafka: partition revoked")
	// ErrAuth: the broker and the transport could not authenticate each
	// other, or the broker denied access: the broker refused the SASL
	// credentials or mechanism, the TLS handshake failed (a broker
	// certificate the TLS config does not trust or whose name does not
	// match, a client certificate missing or refused), or the broker
	// answered with an authorization error (ACLs). Such an error is not
	// marked transport.ErrUnavailable: retrying does not help until the
	// configuration or the broker's users change.
	ErrAuth = errors.New("kafka: authentication failed")
)

// Transport is a transport.Transport on Kafka. It is safe for concurrent
// use.
type Transport struct {
	cfg    Config
	log    *slog.Logger
	dialer *kafkago.Dialer
	rt     *kafkago.Transport
	client *kafkago.Client
	// ctx ends when the transport closes; cancel ends it.
	ctx    context.Context
	cancel context.CancelFunc

	consumers *consumerset.Set[*consumer] // open consumers; closed by Close

	// afterCommitPass, when set (by the tests, before Subscribe), is called
	// after each periodic commit pass of a consumer, whether it committed
	// anything or not.
	afterCommitPass func()
}

var (
	_ transport.Transport = (*Transport)(nil)
	_ transport.Pipeliner = (*Transport)(nil)
	_ transport.Namer     = (*Transport)(nil)
	_ transport.Delivery  = (*Delivery)(nil)
)

// New returns a transport for cfg. It connects lazily, on the first Send or
// Subscribe. It fails only for a config that cannot work (ErrConfig).
func New(cfg Config) (*Transport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Transport{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "kafka"),
		ctx:       ctx,
		cancel:    cancel,
		consumers: consumerset.New[*consumer](),
	}
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: cfg.DialTimeout}).DialContext
	}
	t.dialer = &kafkago.Dialer{
		ClientID:      cfg.ClientID,
		Timeout:       cfg.DialTimeout,
		DualStack:     true,
		TLS:           cfg.TLS,
		SASLMechanism: cfg.SASL,
		DialFunc:      dial,
	}
	t.rt = &kafkago.Transport{
		Dial:        dial,
		DialTimeout: cfg.DialTimeout,
		ClientID:    cfg.ClientID,
		TLS:         cfg.TLS,
		SASL:        cfg.SASL,
		Context:     ctx,
	}
	t.client = &kafkago.Client{
		Addr:      kafkago.TCP(cfg.Brokers...),
		Transport: t.rt,
		Timeout:   cfg.ProduceTimeout,
	}
	return t, nil
}

// Name implements transport.Namer.
func (t *Transport) Name() string { return "Kafka" }

// Close implements transport.Transport: it closes the consumers (each
// commits what its acks allow and leaves its group) and the connections.
// Receivers then return transport.ErrClosed. It is idempotent.
func (t *Transport) Close() error {
	consumers, first := t.consumers.Close()
	if !first {
		return nil
	}
	var wg sync.WaitGroup
	for _, c := range consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Close()
		}()
	}
	wg.Wait()
	t.cancel()
	t.rt.CloseIdleConnections()
	return nil
}

func (t *Transport) isClosed() bool { return t.consumers.IsClosed() }

// addConsumer registers c for Close; it reports false once the transport
// is closed.
func (t *Transport) addConsumer(c *consumer) bool { return t.consumers.Add(c) }

func (t *Transport) removeConsumer(c *consumer) { t.consumers.Remove(c) }

// isAuth reports whether err is a refusal of the credentials or of the
// access, or a failed TLS handshake.
func isAuth(err error) bool {
	var kerr kafkago.Error
	if errors.As(err, &kerr) {
		switch kerr {
		case kafkago.SASLAuthenticationFailed, kafkago.UnsupportedSASLMechanism, kafkago.IllegalSASLState,
			kafkago.TopicAuthorizationFailed, kafkago.GroupAuthorizationFailed,
			kafkago.ClusterAuthorizationFailed, kafkago.TransactionalIDAuthorizationFailed,
			kafkago.DelegationTokenAuthorizationFailed:
			return true
		}
	}
	var (
		verr    *tls.CertificateVerificationError
		alert   tls.AlertError
		header  tls.RecordHeaderError
		unknown x509.UnknownAuthorityError
		invalid x509.CertificateInvalidError
		host    x509.HostnameError
	)
	if errors.As(err, &verr) || errors.As(err, &alert) || errors.As(err, &header) ||
		errors.As(err, &unknown) || errors.As(err, &invalid) || errors.As(err, &host) {
		return true
	}
	// A fatal alert from the broker's side of the handshake (a client
	// certificate missing or refused, no common TLS version) comes as an
	// OpError "remote error" around crypto/tls's unexported alert type.
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}

// retriable reports whether err is a failure to reach the broker or a
// Kafka error the broker marks as temporary.
func retriable(err error) bool {
	var kerr kafkago.Error
	if errors.As(err, &kerr) {
		switch kerr {
		case kafkago.BrokerNotAvailable, kafkago.ReplicaNotAvailable, kafkago.RebalanceInProgress:
			return true
		}
		return kerr.Temporary() || kerr.Timeout()
	}
	var nerr net.Error
	return errors.As(err, &nerr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded)
}

// wrap returns err for op, marked with ErrAuth for a refused
// authentication or access, or with transport.ErrUnavailable when the
// operation may succeed later.
func wrap(op string, err error) error {
	if isAuth(err) {
		return fmt.Errorf("kafka: %s: %w: %w", op, ErrAuth, err)
	}
	if retriable(err) {
		return fmt.Errorf("kafka: %s: %w: %w", op, transport.ErrUnavailable, err)
	}
	return fmt.Errorf("kafka: %s: %w", op, err)
}
