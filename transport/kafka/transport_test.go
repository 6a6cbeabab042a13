package kafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/internal/testwait"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

const waitLong = 15 * time.Second

// committed returns the group's committed offset of partition 0 of topic
// (-1 when none).
func committed(t *testing.T, cfg Config, group, topic string) int64 {
	t.Helper()
	c := &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Timeout: 3 * time.Second}
	res, err := c.OffsetFetch(context.Background(), &kafkago.OffsetFetchRequest{
		GroupID: group, Topics: map[string][]int{topic: {0}},
	})
	require.NoError(t, err)
	for _, p := range res.Topics[topic] {
		if p.Partition == 0 {
			return p.CommittedOffset
		}
	}
	return -1
}

// waitCommitted waits until the group's committed offset of partition 0 is
// want.
func waitCommitted(t *testing.T, cfg Config, group, topic string, want int64) {
	t.Helper()
	testwait.UntilNil(t, waitLong, func() error {
		if got := committed(t, cfg, group, topic); got != want {
			return fmt.Errorf("committed offset %d, want %d", got, want)
		}
		return nil
	})
}

// sendN sends n messages to topic in one batch and returns them.
func sendN(t *testing.T, tr *Transport, topic string, n int) []*message.Message {
	t.Helper()
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = newMessage(topic)
		msgs[i].Headers["seq"] = strconv.Itoa(i)
	}
	require.Nil(t, tr.SendBatch(context.Background(), msgs))
	return msgs
}

// expectNothing checks that c delivers nothing within d.
func expectNothing(t *testing.T, c transport.Consumer, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	del, err := c.Receive(ctx)
	if err == nil {
		t.Fatalf("unexpected delivery of %s (seq %s)", del.Message().ID(), del.Message().Headers["seq"])
	}
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

// The watermark is pure bookkeeping: acks out of order move the commit
// position only over the acked prefix.
func TestWatermarkBookkeeping(t *testing.T) {
	g := &generation{parts: map[partitionKey]*partition{}}
	p := &partition{acked: map[int64]bool{}, next: -1, committed: -1}
	for _, off := range []int64{10, 11, 12, 14, 15} { // 13 compacted away
		require.True(t, g.track(p, off))
	}
	require.Equal(t, int64(10), p.position())
	for _, off := range []int64{12, 14, 11} {
		require.NoError(t, g.ack(p, off))
	}
	require.Equal(t, int64(10), p.position(), "10 is not acked")
	require.NoError(t, g.ack(p, 10))
	require.Equal(t, int64(15), p.position(), "10..14 acked, 15 not")
	require.NoError(t, g.ack(p, 15))
	require.Equal(t, int64(16), p.position())
	require.Empty(t, p.acked)
	g.ended = true
	require.ErrorIs(t, g.ack(p, 16), ErrRevoked)
	require.False(t, g.track(p, 16))
}

// Deliveries acked out of order: the committed offset stops below the first
// unacked one; after a restart of the consumer the unacked ones come back
// and none below the watermark does.
func TestWatermarkAfterRestart(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.NumPartitions = 1
	tr := newTransport(t, cfg)
	topic, group := uniqueName("wm.")+".ev", uniqueName("cap.queue.wm.")
	c, err := tr.Subscribe(context.Background(), group, []string{topic})
	require.NoError(t, err)
	msgs := sendN(t, tr, topic, 10)

	var ds []transport.Delivery
	for range msgs {
		ds = append(ds, receive(t, c, waitLong))
	}
	for i, d := range ds {
		require.Equal(t, msgs[i].ID(), d.Message().ID(), "one partition keeps the order")
	}
	// Ack all but 3 and 6, in reverse order.
	for i := len(ds) - 1; i >= 0; i-- {
		if i != 3 && i != 6 {
			require.NoError(t, ds[i].Ack(context.Background()))
		}
	}
	waitCommitted(t, cfg, group, topic, 3)
	require.NoError(t, c.Close())
	require.ErrorIs(t, ds[3].Ack(context.Background()), ErrRevoked, "an ack after close is not committed")
	require.Equal(t, int64(3), committed(t, cfg, group, topic))

	c2, err := newTransport(t, cfg).Subscribe(context.Background(), group, []string{topic})
	require.NoError(t, err)
	for i := 3; i < 10; i++ {
		d := receive(t, c2, waitLong)
		require.Equal(t, msgs[i].ID(), d.Message().ID(), "redelivery from the watermark, in order")
		require.NoError(t, d.Ack(context.Background()))
	}
	expectNothing(t, c2, 500*time.Millisecond)
	waitCommitted(t, cfg, group, topic, 10)
}

// A rejected delivery comes back (with its headers as they arrived) and
// holds the watermark below it until it is acked.
func TestRejectRedelivers(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.NumPartitions = 1
	tr := newTransport(t, cfg)
	passes := countCommitPasses(tr)
	topic, group := uniqueName("rej.")+".ev", uniqueName("cap.queue.rej.")
	c, err := tr.Subscribe(context.Background(), group, []string{topic})
	require.NoError(t, err)
	msgs := sendN(t, tr, topic, 2)

	d0 := receive(t, c, waitLong)
	require.Equal(t, msgs[0].ID(), d0.Message().ID())
	d0.Message().Headers["changed-by-bus"] = "x"
	require.NoError(t, d0.Reject(context.Background()))
	require.Error(t, d0.Ack(context.Background()), "settled once")

	d1 := receive(t, c, waitLong)
	require.Equal(t, msgs[0].ID(), d1.Message().ID(), "the rejected message first")
	require.NotContains(t, d1.Message().Headers, "changed-by-bus")
	d2 := receive(t, c, waitLong)
	require.Equal(t, msgs[1].ID(), d2.Message().ID())
	require.NoError(t, d2.Ack(context.Background()))
	passes.wait(t, 2) // a commit of the ack would have happened
	require.Equal(t, int64(0), committed(t, cfg, group, topic), "the watermark stays at the rejected message")
	require.NoError(t, d1.Ack(context.Background()))
	waitCommitted(t, cfg, group, topic, 2)
}

// Two consumers of one group in two processes (transports), the second
// joining while the first has deliveries in flight: every message is
// handled, none lost.
func TestRebalanceLosesNothing(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	topic, group := uniqueName("reb.")+".ev", uniqueName("cap.queue.reb.")
	trA, trB := newTransport(t, cfg), newTransport(t, cfg)
	cA, err := trA.Subscribe(context.Background(), group, []string{topic})
	require.NoError(t, err)

	const n = 600
	var (
		mu      sync.Mutex
		handled = map[string]int{}
		byB     int // acks of B's deliveries
		revoked int
	)
	done := make(chan struct{})
	consume := func(c transport.Consumer, isB bool) {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			d, err := c.Receive(ctx)
			cancel()
			if errors.Is(err, transport.ErrClosed) {
				return
			}
			if err != nil {
				select {
				case <-done:
					return
				default:
					continue
				}
			}
			// Handled concurrently, acked out of order after a while.
			go func() {
				// Time, not an event: the handler's run time, random so
				// that acks come out of order.
				time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
				err := d.Ack(context.Background())
				mu.Lock()
				defer mu.Unlock()
				if errors.Is(err, ErrRevoked) {
					revoked++
					return
				}
				require.NoError(t, err)
				handled[d.Message().ID()]++
				if isB {
					byB++
				}
			}()
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); consume(cA, false) }()

	all := make(map[string]bool)
	send := func(k int) {
		msgs := sendN(t, trA, topic, k)
		for _, m := range msgs {
			all[m.ID()] = true
		}
	}
	send(n / 3)
	acks := func() (all, ofB int) {
		mu.Lock()
		defer mu.Unlock()
		return len(handled), byB
	}
	// B joins while A works: once A has acked some of them.
	testwait.Until(t, waitLong, func() bool { all, _ := acks(); return all > 0 }, "A acked nothing")
	cB, err := trB.Subscribe(context.Background(), group, []string{topic})
	require.NoError(t, err)
	wg.Add(1)
	go func() { defer wg.Done(); consume(cB, true) }()
	// More batches while the group rebalances, each once every message
	// sent before it is acked, until B has joined and acked some: how long
	// the group takes to rebalance is the broker's business, so the bound
	// is a time, not a number of batches.
	joined := time.Now().Add(waitLong)
	for k := 0; ; k++ {
		if _, ofB := acks(); k >= 4 && ofB > 0 {
			break
		}
		require.False(t, time.Now().After(joined), "B acked nothing within %s (%d batches)", waitLong, k)
		send(n / 6)
		sent := len(all)
		testwait.Until(t, waitLong, func() bool { all, _ := acks(); return all >= sent }, "batch %d not acked", k)
	}

	testwait.UntilNil(t, waitLong, func() error {
		mu.Lock()
		defer mu.Unlock()
		missing := 0
		for id := range all {
			if handled[id] == 0 {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d messages never acked", missing, len(all))
		}
		return nil
	})
	close(done)
	require.NoError(t, cA.Close())
	require.NoError(t, cB.Close())
	wg.Wait()
	t.Logf("%d messages, %d acks refused after a rebalance", len(all), revoked)
}

// A topic created after Subscribe that matches the consumer's wildcard is
// consumed within the refresh period, from its first record.
func TestWildcardPicksUpNewTopic(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	tr := newTransport(t, cfg)
	prefix := uniqueName("wc")
	group := uniqueName("cap.queue.wc.")
	c, err := tr.Subscribe(context.Background(), group, []string{prefix + ".*.created"})
	require.NoError(t, err)

	// Created by another process (transport), after Subscribe.
	other := newTransport(t, cfg)
	m := newMessage(prefix + ".order.created")
	start := time.Now()
	require.NoError(t, other.Send(context.Background(), m))
	d := receive(t, c, waitLong)
	require.Equal(t, m.ID(), d.Message().ID())
	require.Less(t, time.Since(start), 3*time.Second+cfg.TopicRefreshInterval)
	require.NoError(t, d.Ack(context.Background()))

	// A second topic later, while the group runs.
	m2 := newMessage(prefix + ".invoice.created")
	require.NoError(t, other.Send(context.Background(), m2))
	require.NoError(t, other.Send(context.Background(), newMessage(prefix+".invoice.deleted")))
	d = receive(t, c, waitLong)
	require.Equal(t, m2.ID(), d.Message().ID())
	require.NoError(t, d.Ack(context.Background()))
	expectNothing(t, c, time.Second)
}

// With DisableTopicCreation the transport creates nothing: a send to a
// missing topic fails with ErrUnknownTopic, and a consumer of a missing
// topic starts consuming once the operator creates it.
func TestDisableTopicCreation(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.DisableTopicCreation = true
	tr := newTransport(t, cfg)
	topic, group := uniqueName("op.")+".ev", uniqueName("cap.queue.op.")
	err := tr.Send(context.Background(), newMessage(topic))
	require.ErrorIs(t, err, ErrUnknownTopic)
	c, err := tr.Subscribe(context.Background(), group, []string{topic})
	require.NoError(t, err)

	admin := &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Timeout: 3 * time.Second}
	res, err := admin.CreateTopics(context.Background(), &kafkago.CreateTopicsRequest{
		Topics: []kafkago.TopicConfig{{Topic: topic, NumPartitions: 2, ReplicationFactor: 1}},
	})
	require.NoError(t, err)
	require.NoError(t, res.Errors[topic])
	m := newMessage(topic)
	require.NoError(t, tr.Send(context.Background(), m))
	d := receive(t, c, waitLong)
	require.Equal(t, m.ID(), d.Message().ID())
}

// The record carries CAP's key: cap-kafka-key when set, else cap-msg-id;
// records of one key land in one partition.
func TestRecordKeyAndPartition(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	tr := newTransport(t, cfg)
	topic, group := uniqueName("key.")+".ev", uniqueName("cap.queue.key.")
	c, err := tr.Subscribe(context.Background(), group, []string{topic})
	require.NoError(t, err)
	var msgs []*message.Message
	for i := range 6 {
		m := newMessage(topic)
		if i%2 == 0 {
			m.Headers[message.HeaderKafkaKey] = "customer-42"
		}
		msgs = append(msgs, m)
	}
	require.Nil(t, tr.SendBatch(context.Background(), msgs))
	parts := map[int]bool{}
	for range msgs {
		d := receive(t, c, waitLong).(*Delivery)
		if d.Message().Headers[message.HeaderKafkaKey] != "" {
			require.Equal(t, "customer-42", string(d.Key()))
			parts[d.Partition()] = true
		} else {
			require.Equal(t, d.Message().ID(), string(d.Key()))
		}
		require.Equal(t, partitionFor(d.Key(), testPartitions), d.Partition())
		require.NoError(t, d.Ack(context.Background()))
	}
	require.Len(t, parts, 1, "one key, one partition")
	// librdkafka's consistent_random: CRC-32 of the key.
	require.Equal(t, 0, partitionFor([]byte("a"), 1))
	require.Equal(t, int(3904355907%7), partitionFor([]byte("a"), 7))
}

// Sending to an unreachable broker fails promptly with ErrUnavailable, and
// so does Subscribe.
func TestUnreachableBroker(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	cfg := testConfig(t)
	cfg.Brokers = []string{addr}
	tr := newTransport(t, cfg)
	start := time.Now()
	err = tr.Send(context.Background(), newMessage("x.y"))
	require.ErrorIs(t, err, transport.ErrUnavailable)
	require.Less(t, time.Since(start), 3*time.Second)
	start = time.Now()
	_, err = tr.Subscribe(context.Background(), "g", []string{"x.y"})
	require.ErrorIs(t, err, transport.ErrUnavailable)
	require.Less(t, time.Since(start), 3*time.Second)
	require.ErrorIs(t, tr.Check(context.Background()), transport.ErrUnavailable, "the health check sees no broker")
}

// Check passes while a broker answers and reports ErrClosed once closed.
func TestCheck(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, testConfig(t))
	require.NoError(t, tr.Check(context.Background()))
	require.NoError(t, tr.Close())
	require.ErrorIs(t, tr.Check(context.Background()), transport.ErrClosed)
}

// Bad configs are refused with ErrConfig.
func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{Brokers: []string{"no-port"}},
		{NumPartitions: -2},
		{ReplicationFactor: -5},
		{RequiredAcks: 7},
		{MaxBatchBytes: -1},
	} {
		_, err := New(c)
		require.ErrorIs(t, err, ErrConfig, "%+v", c)
	}
	tr, err := New(Config{})
	require.NoError(t, err)
	require.Equal(t, []string{DefaultBroker}, tr.cfg.Brokers)
	require.Equal(t, "Kafka", tr.Name())
	require.Equal(t, kafkago.RequireAll, tr.cfg.requiredAcks())
	require.NoError(t, tr.Close())
}
