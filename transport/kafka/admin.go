package kafka

import (
	"context"
	"errors"
	"fmt"

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
		return 0, wrap(fmt.Sprintf("topic %q", topic), err)
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
		return 0, wrap(fmt.Sprintf("topic %q", topic), err)
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
		return wrap("create topics", err)
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

// Check implements transport.Checker: one of the brokers accepts a
// connection (with TLS and SASL when configured).
func (t *Transport) Check(ctx context.Context) error {
	if t.isClosed() {
		return transport.ErrClosed
	}
	var last error
	for _, b := range t.cfg.Brokers {
		conn, err := t.dialer.DialContext(ctx, "tcp", b)
		if err == nil {
			_ = conn.Close()
			return nil
		}
		last = err
	}
	return fmt.Errorf("kafka: check: %w: %v", transport.ErrUnavailable, last)
}
