//go:build faults

package faulttest_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
		k := &kafkaSide{addrs: c.ListenAddrs()}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { k.expireDeadMembers(ctx, t) })
		t.Cleanup(func() { cancel(); wg.Wait() })
		return k, nil
	}
	extraScenarios = append(extraScenarios, func(time.Duration) []scenario {
		b := backend{prefix: "kafka-", transport: "kafka"}
		return []scenario{b.killProducer(), b.killConsumer()}
	})
}

type kafkaSide struct{ addrs []string }

// kafkaSessionTimeout is the programs' session timeout (openKafka).
const kafkaSessionTimeout = 3 * time.Second

// expireDeadMembers stands in for a broker's session expiry where kfake
// has none. kfake answers a JoinGroup that was waiting when its connection
// closed on the closed connection, and only a delivered answer starts the
// member's session timer (kfake's group.reply): the dead member stays in
// the group for good, and the partitions the leader assigns it are read by
// no one. A Kafka broker expires it one session timeout after the join. A
// consumer SIGKILLed while its group rebalances hits this (one run in
// five of kafka-kill-consumer did: 376 to 812 messages never handled).
//
// Every 500 ms it describes the groups, and a member of a stable group
// whose program has died (openKafka's client IDs end in the program's pid)
// is removed with LeaveGroup once it has been seen so for a session
// timeout. A live program's member, or one kfake expires itself, is never
// touched.
func (k *kafkaSide) expireDeadMembers(ctx context.Context, t *testing.T) {
	c := &kafkago.Client{Addr: kafkago.TCP(k.addrs...), Timeout: 2 * time.Second}
	deadSince := map[string]time.Time{}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		lg, err := c.ListGroups(ctx, &kafkago.ListGroupsRequest{})
		if err != nil || len(lg.Groups) == 0 {
			continue
		}
		var ids []string
		for _, g := range lg.Groups {
			ids = append(ids, g.GroupID)
		}
		dg, err := c.DescribeGroups(ctx, &kafkago.DescribeGroupsRequest{GroupIDs: ids})
		if err != nil {
			continue
		}
		seen := map[string]bool{}
		for _, g := range dg.Groups {
			if g.Error != nil || g.GroupState != "Stable" {
				continue
			}
			for _, m := range g.Members {
				if !programDied(m.ClientID) {
					continue
				}
				seen[m.MemberID] = true
				since, ok := deadSince[m.MemberID]
				if !ok {
					deadSince[m.MemberID] = time.Now()
					continue
				}
				if time.Since(since) < kafkaSessionTimeout {
					continue
				}
				_, err := c.LeaveGroup(ctx, &kafkago.LeaveGroupRequest{GroupID: g.GroupID,
					Members: []kafkago.LeaveGroupRequestMember{{ID: m.MemberID}}})
				if err == nil && ctx.Err() == nil {
					t.Logf("kfake: removed member %s of group %s: its program died while the group rebalanced, and kfake never expires it",
						m.MemberID, g.GroupID)
				}
			}
		}
		for id := range deadSince {
			if !seen[id] {
				delete(deadSince, id)
			}
		}
	}
}

// programDied reports whether the harness's program whose pid ends
// clientID (openKafka) has exited.
func programDied(clientID string) bool {
	i := strings.LastIndexByte(clientID, '-')
	if i < 0 {
		return false
	}
	pid, err := strconv.Atoi(clientID[i+1:])
	if err != nil || pid <= 0 {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

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
