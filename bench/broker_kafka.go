package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/kafka"
)

func init() {
	registerTransport("kafka", openKafka)
	addServerFlag("kafka", "CAP_BENCH_KAFKA", "",
		"Kafka bootstrap brokers, comma-separated (empty: an in-process kfake cluster of one broker)")
}

// kafkaBroker is Kafka's raw side: the brokers, the topics of the run
// (known by its prefix) and, without -kafka, the in-process cluster.
type kafkaBroker struct {
	brokers []string
	prefix  string
	client  *kafkago.Client
	fake    *kfake.Cluster
}

func openKafka(ctx context.Context, cfg *config, prefix string) (transport.Transport, rawBroker, error) {
	k := &kafkaBroker{prefix: prefix}
	if addrs := cfg.server("kafka"); addrs != "" {
		k.brokers = strings.Split(addrs, ",")
	} else {
		// kfake keeps everything in memory in this process: it measures the
		// client side, not a real broker's disk and network.
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(4))
		if err != nil {
			return nil, nil, fmt.Errorf("kafka: start kfake: %w", err)
		}
		k.fake = c
		k.brokers = c.ListenAddrs()
	}
	k.client = &kafkago.Client{Addr: kafkago.TCP(k.brokers...), Timeout: 10 * time.Second}
	if _, err := k.client.Metadata(ctx, &kafkago.MetadataRequest{}); err != nil {
		k.shutdown()
		return nil, nil, fmt.Errorf("kafka at %v (set -kafka or CAP_BENCH_KAFKA): %w", k.brokers, err)
	}
	tr, err := kafka.New(kafka.Config{Brokers: k.brokers, ClientID: "cap-bench", Logger: cfg.logger()})
	if err != nil {
		k.shutdown()
		return nil, nil, err
	}
	return tr, k, nil
}

func (k *kafkaBroker) shutdown() {
	if k.fake != nil {
		k.fake.Close()
	}
}

// purge: Kafka keeps records for every group; the harness drains through
// the transport.
func (k *kafkaBroker) purge(context.Context, string, string) error { return errPurgeByReceiving }

func (k *kafkaBroker) close(groups []string) {
	defer k.shutdown()
	if k.fake != nil {
		return // everything goes with the cluster
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if len(groups) > 0 {
		if _, err := k.client.DeleteGroups(ctx, &kafkago.DeleteGroupsRequest{GroupIDs: groups}); err != nil {
			fmt.Fprintln(os.Stderr, "bench: kafka: delete groups:", err)
		}
	}
	md, err := k.client.Metadata(ctx, &kafkago.MetadataRequest{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: kafka: list topics:", err)
		return
	}
	var topics []string
	for _, t := range md.Topics {
		if strings.HasPrefix(t.Name, k.prefix) {
			topics = append(topics, t.Name)
		}
	}
	if len(topics) > 0 {
		if _, err := k.client.DeleteTopics(ctx, &kafkago.DeleteTopicsRequest{Topics: topics}); err != nil {
			fmt.Fprintln(os.Stderr, "bench: kafka: delete topics:", err)
		}
	}
}

// record is the Kafka form of m, as the transport sends it.
func record(m *message.Message) kafkago.Message {
	key := m.Headers[message.HeaderKafkaKey]
	if key == "" {
		key = m.ID()
	}
	hs := make([]kafkago.Header, 0, len(m.Headers))
	for k, v := range m.Headers {
		hs = append(hs, kafkago.Header{Key: k, Value: []byte(v)})
	}
	return kafkago.Message{Topic: m.Name(), Key: []byte(key), Headers: hs, Value: m.Body}
}

// rawSend is kafka-go's Writer used as it is fastest: one synchronous
// WriteMessages of the whole backlog, in batches of up to 1,000 records per
// partition, acks=all, topics created by the broker.
func (k *kafkaBroker) rawSend(ctx context.Context, msgs []*message.Message) error {
	w := &kafkago.Writer{
		Addr: kafkago.TCP(k.brokers...), Balancer: &kafkago.CRC32Balancer{},
		RequiredAcks: kafkago.RequireAll, BatchSize: 1000, BatchBytes: 900 << 10,
		BatchTimeout: time.Millisecond, AllowAutoTopicCreation: true,
	}
	defer w.Close()
	recs := make([]kafkago.Message, len(msgs))
	for i, m := range msgs {
		recs[i] = record(m)
	}
	return w.WriteMessages(ctx, recs...)
}

// rawLatency: a Writer with batches of one (no BatchTimeout wait) and a
// Reader of a group of its own that commits every 100 ms.
func (k *kafkaBroker) rawLatency(ctx context.Context, p *latencyProbe, topic, group string) error {
	if _, err := k.client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{
		{Topic: topic, NumPartitions: -1, ReplicationFactor: -1}}}); err != nil {
		return err
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers: k.brokers, GroupID: group + ".raw", Topic: topic, StartOffset: kafkago.LastOffset,
		MaxWait: 100 * time.Millisecond, CommitInterval: 100 * time.Millisecond,
	})
	rctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := r.FetchMessage(rctx)
			if err != nil {
				return
			}
			hs := map[string]string{}
			for _, h := range m.Headers {
				if h.Key == "bench-sent" {
					hs[h.Key] = string(h.Value)
				}
			}
			p.received(hs)
			_ = r.CommitMessages(rctx, m)
		}
	}()
	w := &kafkago.Writer{
		Addr: kafkago.TCP(k.brokers...), Balancer: &kafkago.CRC32Balancer{},
		RequiredAcks: kafkago.RequireAll, BatchSize: 1, BatchTimeout: time.Millisecond,
	}
	err := p.run(ctx, func(ctx context.Context) error {
		return w.WriteMessages(ctx, record(p.stamp()))
	})
	_ = w.Close()
	stop()
	_ = r.Close()
	wg.Wait()
	return err
}
