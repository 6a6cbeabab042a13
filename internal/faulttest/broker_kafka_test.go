//go:build faults

package faulttest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka runs in the harness process: an in-process kfake cluster of three
// brokers that lasts the whole run, reached by the programs over loopback
// TCP. kfake keeps its data in memory, so it is not restarted: the Kafka
// scenarios kill the programs only.
func init() {
	brokerOpeners["kafka"] = func(t *testing.T, _ *env) (brokerSide, error) {
		c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.DefaultNumPartitions(4),
			kfake.GroupMinSessionTimeout(100*time.Millisecond))
		if err != nil {
			return nil, fmt.Errorf("start kfake: %w", err)
		}
		t.Cleanup(c.Close)
		return &kafkaSide{addrs: c.ListenAddrs()}, nil
	}
	extraScenarios = append(extraScenarios, func(time.Duration) []scenario {
		b := backend{prefix: "kafka-", transport: "kafka"}
		return []scenario{b.killProducer(), b.killConsumer()}
	})
}

type kafkaSide struct{ addrs []string }

func (k *kafkaSide) args() []string {
	return []string{"-transport", "kafka", "-broker", strings.Join(k.addrs, ",")}
}

func (k *kafkaSide) canRestart() string {
	return "kfake keeps its data in memory in the harness process; it is not restarted"
}

func (k *kafkaSide) restart(time.Duration) error { return errors.New(k.canRestart()) }

func (k *kafkaSide) ensureUp() error { return nil }

// cleanup deletes the scenario's groups and topics.
func (k *kafkaSide) cleanup(prefix string, groups []string, _ string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := &kafkago.Client{Addr: kafkago.TCP(k.addrs...)}
	if len(groups) > 0 {
		if _, err := c.DeleteGroups(ctx, &kafkago.DeleteGroupsRequest{GroupIDs: groups}); err != nil {
			return fmt.Errorf("delete groups: %w", err)
		}
	}
	md, err := c.Metadata(ctx, &kafkago.MetadataRequest{})
	if err != nil {
		return err
	}
	var topics []string
	for _, t := range md.Topics {
		if strings.HasPrefix(t.Name, prefix) {
			topics = append(topics, t.Name)
		}
	}
	if len(topics) == 0 {
		return nil
	}
	_, err = c.DeleteTopics(ctx, &kafkago.DeleteTopicsRequest{Topics: topics})
	return err
}
