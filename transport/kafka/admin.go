package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/go-cap/cap/transport"
)

// partitions returns the partition count of topic, creating the topic when
// it does not exist and the transport may create topics. The count comes
// from kafka-go's metadata cache, which asks the broker when the topic is
// not in it.
func (t *Transport) partitions(ctx context.Context, topic string) (int, error) {
	n, err := t.partitionCount(ctx, topic)
	if err == nil {
		return n, nil
	}
	if !errors.Is(err, kafkago.UnknownTopicOrPartition) {
		return 0, t.fail(ctx, fmt.Sprintf("topic %q", topic), err)
	}
	if t.cfg.DisableTopicCreation {
		return 0, fmt.Errorf("%w %q", ErrUnknownTopic, topic)
	}
	if err := t.createTopics(ctx, []string{topic}); err != nil {
		return 0, err
	}
	n, err = t.partitionCount(ctx, topic)
	if err != nil {
		// Created, but not yet known to the broker that answered: a
		// later attempt succeeds.
		return 0, t.fail(ctx, fmt.Sprintf("topic %q", topic), err)
	}
	return n, nil
}

func (t *Transport) partitionCount(ctx context.Context, topic string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout+t.cfg.ProduceTimeout)
	defer cancel()
	r, err := t.rt.RoundTrip(ctx, t.client.Addr, &metadataAPI.Request{
		TopicNames: []string{topic},
		// Makes the cache ask the broker about a topic it does not know;
		// the broker creates the topic only if auto.create.topics.enable.
		AllowAutoTopicCreation: true,
	})
	if err != nil {
		return 0, err
	}
	for _, tp := range r.(*metadataAPI.Response).Topics {
		if tp.Name != topic {
			continue
		}
		if tp.ErrorCode != 0 {
			return 0, kafkago.Error(tp.ErrorCode)
		}
		if len(tp.Partitions) == 0 {
			return 0, kafkago.UnknownTopicOrPartition
		}
		return len(tp.Partitions), nil
	}
	return 0, kafkago.UnknownTopicOrPartition
}

// createTopics creates topics with the configured partition count and
// replication factor; a topic that exists already is no error.
func (t *Transport) createTopics(ctx context.Context, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout+t.cfg.ProduceTimeout)
	defer cancel()
	// kafka-go reports why it cannot reach the cluster (refused
	// credentials, an untrusted certificate) to metadata requests only;
	// a CreateTopics would fail with BrokerNotAvailable instead. The
	// metadata comes from its cache when it has the cluster's layout.
	if _, err := t.rt.RoundTrip(ctx, t.client.Addr, &metadataAPI.Request{TopicNames: topics}); err != nil {
		return t.fail(ctx, "create topics", err)
	}
	req := &kafkago.CreateTopicsRequest{}
	for _, name := range topics {
		req.Topics = append(req.Topics, kafkago.TopicConfig{
			Topic:             name,
			NumPartitions:     t.cfg.NumPartitions,
			ReplicationFactor: t.cfg.ReplicationFactor,
		})
	}
	res, err := t.client.CreateTopics(ctx, req)
	if err != nil {
		return t.fail(ctx, "create topics", err)
	}
	for name, err := range res.Errors {
		if err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
			return wrap(fmt.Sprintf("create topic %q", name), err)
		}
	}
	return nil
}

// listTopics returns the names of the cluster's topics, asked from a
// broker directly (not from a cache), trying the bootstrap brokers in turn.
func (t *Transport) listTopics(ctx context.Context) (map[string]bool, error) {
	var last error
	for _, b := range t.cfg.Brokers {
		conn, err := t.dialer.DialContext(ctx, "tcp", b)
		if err != nil {
			last = err
			continue
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		parts, err := conn.ReadPartitions()
		_ = conn.Close()
		if err != nil {
			last = err
			continue
		}
		names := make(map[string]bool)
		for _, p := range parts {
			names[p.Topic] = true
		}
		return names, nil
	}
	return nil, wrap("list topics", last)
}

// fail returns err for op like wrap, after looking behind a connection the
// broker closed (see cause).
func (t *Transport) fail(ctx context.Context, op string, err error) error {
	return wrap(op, t.cause(ctx, err))
}

// cause returns err, or the authentication failure behind it. A broker may
// refuse SASL credentials by closing the connection, which kafka-go's
// pooled connections report as an unexpected EOF, like a broker that went
// away; a new connection through the dialer, which reads that close as
// SASLAuthenticationFailed, tells the two apart. It costs a connection
// only when SASL is configured and the broker closed one.
func (t *Transport) cause(ctx context.Context, err error) error {
	if t.cfg.SASL == nil || isAuth(err) ||
		!(errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)) {
		return err
	}
	for _, b := range t.cfg.Brokers {
		if perr := t.checkBroker(ctx, b); isAuth(perr) {
			return fmt.Errorf("broker %s: %w", b, perr)
		}
	}
	return err
}

// Check implements transport.Checker: it opens a new connection to a
// broker (TLS and SASL included, when configured) and asks it for the
// cluster's brokers, trying the bootstrap brokers in turn until one
// answers. Each attempt is bounded by Config.DialTimeout and by ctx. When
// none answers, the error wraps ErrAuth if a TLS handshake or the
// authentication failed, else transport.ErrUnavailable. A closed transport
// gives transport.ErrClosed.
func (t *Transport) Check(ctx context.Context) error {
	if t.isClosed() {
		return transport.ErrClosed
	}
	var errs []error
	for _, b := range t.cfg.Brokers {
		err := t.checkBroker(ctx, b)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("broker %s: %w", b, err))
	}
	err := errors.Join(errs...)
	if !isAuth(err) && !retriable(err) {
		// Whatever else keeps every broker from answering, the cluster
		// is not usable now.
		return fmt.Errorf("kafka: check: %w: %w", transport.ErrUnavailable, err)
	}
	return wrap("check", err)
}

// checkBroker sends one metadata request to broker over a new connection.
func (t *Transport) checkBroker(ctx context.Context, broker string) error {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	conn, err := t.dialer.DialContext(ctx, "tcp", broker)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A cancelled ctx ends the request too.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	brokers, err := conn.Brokers()
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	if len(brokers) == 0 {
		return errors.New("metadata: the broker lists no brokers")
	}
	return nil
}
