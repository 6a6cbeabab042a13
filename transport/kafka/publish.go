package kafka

import (
	"context"
	"fmt"
	"hash/crc32"
	"sync"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// Send implements transport.Transport: it produces the message to the
// topic in its cap-msg-name header and returns once the broker has
// acknowledged it (Config.RequiredAcks).
func (t *Transport) Send(ctx context.Context, msg *message.Message) error {
	if errs := t.PublishBatch(ctx, []*message.Message{msg})(); errs != nil {
		return errs[0]
	}
	return nil
}

// SendBatch implements transport.Transport: the messages are grouped by
// partition and each group goes in one produce request (split at
// Config.MaxBatchBytes), all at once.
func (t *Transport) SendBatch(ctx context.Context, msgs []*message.Message) []error {
	return t.PublishBatch(ctx, msgs)()
}

// PublishBatch implements transport.Pipeliner: it sends the produce
// requests of msgs and returns a function that waits for the broker's
// acknowledgements.
func (t *Transport) PublishBatch(ctx context.Context, msgs []*message.Message) (wait func() []error) {
	errs := make([]error, len(msgs))
	failed := false
	fail := func(i int, err error) {
		errs[i] = err
		failed = true
	}
	if t.isClosed() {
		for i := range msgs {
			fail(i, fmt.Errorf("kafka: send: %w", transport.ErrClosed))
		}
		return func() []error { return errs }
	}

	type partKey struct {
		topic     string
		partition int
	}
	groups := make(map[partKey][]int)
	var order []partKey
	counts := make(map[string]int)
	records := make([]kafkago.Record, len(msgs))
	for i, m := range msgs {
		topic := m.Name()
		if topic == "" {
			fail(i, ErrNoTopic)
			continue
		}
		n, ok := counts[topic]
		if !ok {
			var err error
			n, err = t.partitions(ctx, topic)
			if err != nil {
				for j := i; j < len(msgs); j++ {
					if msgs[j].Name() == topic {
						fail(j, err)
					}
				}
				counts[topic] = 0
				continue
			}
			counts[topic] = n
		}
		if n == 0 {
			continue // failed above
		}
		key := recordKey(m)
		records[i] = encodeRecord(m, key)
		k := partKey{topic, partitionFor(key, n)}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}

	var wg sync.WaitGroup
	for _, k := range order {
		idx := groups[k]
		for len(idx) > 0 {
			chunk := t.chunk(msgs, idx)
			idx = idx[len(chunk):]
			wg.Add(1)
			go func() {
				defer wg.Done()
				rs := make([]kafkago.Record, len(chunk))
				for j, i := range chunk {
					rs[j] = records[i]
				}
				err := t.produce(ctx, k.topic, k.partition, rs)
				if err != nil {
					for _, i := range chunk {
						errs[i] = err
					}
				}
			}()
		}
	}
	return func() []error {
		wg.Wait()
		if failed {
			return errs
		}
		for _, err := range errs {
			if err != nil {
				return errs
			}
		}
		return nil
	}
}

// chunk returns the first indexes of idx whose records fit in
// Config.MaxBatchBytes (at least one).
func (t *Transport) chunk(msgs []*message.Message, idx []int) []int {
	size := 0
	for n, i := range idx {
		size += recordSize(msgs[i])
		if n > 0 && size > t.cfg.MaxBatchBytes {
			return idx[:n]
		}
	}
	return idx
}

func recordSize(m *message.Message) int {
	n := len(m.Body) + 64
	for k, v := range m.Headers {
		n += len(k) + len(v) + 4
	}
	return n
}

// produce sends one produce request and reports its outcome.
func (t *Transport) produce(ctx context.Context, topic string, partition int, rs []kafkago.Record) error {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.ProduceTimeout)
	defer cancel()
	res, err := t.client.Produce(ctx, &kafkago.ProduceRequest{
		Topic:        topic,
		Partition:    partition,
		RequiredAcks: t.cfg.requiredAcks(),
		Records:      kafkago.NewRecordReader(rs...),
		Compression:  t.cfg.Compression,
	})
	if err != nil {
		return t.fail(ctx, "send", err)
	}
	if res == nil { // acks=0
		return nil
	}
	if res.Error != nil {
		return wrapSend(res.Error)
	}
	for _, err := range res.RecordErrors {
		if err != nil {
			return wrapSend(err)
		}
	}
	return nil
}

func wrapSend(err error) error { return wrap("send", err) }

// partitionFor is librdkafka's default partitioner for a non-empty key
// (consistent_random): CRC-32 (IEEE) of the key modulo the partition count,
// so that Go and .NET producers put one key in one partition.
func partitionFor(key []byte, n int) int {
	if n <= 1 {
		return 0
	}
	return int(crc32.ChecksumIEEE(key) % uint32(n))
}
