package redis

import (
	"context"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// Entries a crashed consumer had read and not acknowledged are taken over
// by another consumer of the group after ClaimIdle, with their content;
// the group's other entries are not delivered twice.
func TestCrashedConsumerEntriesRedelivered(t *testing.T) {
	t.Parallel()
	topic := uniqueName("crash.")
	group := uniqueName("cap.queue.crash.")
	deleteKeysAtCleanup(t, topic)
	rdb := admin(t)
	ctx := context.Background()

	sender := newTransport(t, Config{})
	require.NoError(t, rdb.XGroupCreateMkStream(ctx, topic, group, "$").Err())
	msgs := make([]*message.Message, 8)
	want := map[string]bool{}
	for i := range msgs {
		msgs[i] = newMessage(topic, `{"n":1}`)
		want[msgs[i].ID()] = true
	}
	require.Nil(t, sender.SendBatch(ctx, msgs))

	// A consumer of another instance reads five entries and dies.
	res, err := rdb.XReadGroup(ctx, &goredis.XReadGroupArgs{Group: group, Consumer: "dead-instance-1",
		Streams: []string{topic, ">"}, Count: 5, Block: -1}).Result()
	require.NoError(t, err)
	require.Len(t, res[0].Messages, 5)

	const idle = 500 * time.Millisecond
	tr := newTransport(t, Config{ClaimIdle: idle, ClaimInterval: 100 * time.Millisecond})
	start := time.Now()
	c := subscribe(t, tr, group, topic)
	got := map[string]bool{}
	var claimedAt time.Duration
	for len(got) < len(want) {
		d := receive(t, c, waitLong)
		id := d.Message().ID()
		require.True(t, want[id], "unexpected %s", id)
		require.False(t, got[id], "%s delivered twice", id)
		require.Equal(t, `{"n":1}`, string(d.Message().Body))
		got[id] = true
		claimedAt = time.Since(start)
		require.NoError(t, d.Ack(ctx))
	}
	require.GreaterOrEqual(t, claimedAt, idle, "the dead consumer's entries waited for ClaimIdle")
	requireNothing(t, c, 300*time.Millisecond)
	p, err := rdb.XPending(ctx, topic, group).Result()
	require.NoError(t, err)
	require.Zero(t, p.Count)
}

// A rejected entry is delivered again at once, to a consumer of the same
// group, with the same content; Close gives unacknowledged entries back so
// that the group's other consumer gets them without waiting for ClaimIdle.
func TestRejectAndCloseGiveEntriesBack(t *testing.T) {
	t.Parallel()
	topic := uniqueName("reject.")
	group := uniqueName("cap.queue.reject.")
	deleteKeysAtCleanup(t, topic)
	tr := newTransport(t, Config{}) // ClaimIdle 30 s: far longer than the waits below
	c1 := subscribe(t, tr, group, topic)
	msg := newMessage(topic, `"x"`)
	require.NoError(t, tr.Send(context.Background(), msg))

	start := time.Now()
	d := receive(t, c1, waitLong)
	require.NoError(t, d.Reject(context.Background()))
	require.ErrorContains(t, d.Ack(context.Background()), "already", "a settled delivery")
	d = receive(t, c1, waitLong)
	require.Equal(t, msg.ID(), d.Message().ID())
	require.Less(t, time.Since(start), 5*time.Second)

	c2 := subscribe(t, tr, group, topic)
	require.NoError(t, c1.Close()) // d is neither acked nor rejected
	d2 := receive(t, c2, waitLong)
	require.Equal(t, msg.ID(), d2.Message().ID())
	require.Equal(t, []byte(`"x"`), d2.Message().Body)
	require.NoError(t, d2.Ack(context.Background()))
	requireNothing(t, c2, 300*time.Millisecond)
}

// The server is killed (SIGKILL) and started again mid-stream under the
// transport: sends fail with ErrUnavailable while it is down, the consumer
// goes on once it is back, and every message sent is received.
func TestServerRestartMidStream(t *testing.T) {
	t.Parallel()
	srv := startOwnServer(t)
	tr := newTransport(t, Config{URL: srv.url(), ClaimIdle: time.Second, ClaimInterval: 200 * time.Millisecond,
		ReconnectDelay: 20 * time.Millisecond, MaxReconnectDelay: 200 * time.Millisecond})
	topic, group := "orders.created", "cap.queue.restart.v1"
	c := subscribe(t, tr, group, topic)

	var mu sync.Mutex
	got := map[string]int{}
	recvDone := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		defer close(recvDone)
		for {
			d, err := c.Receive(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			got[d.Message().ID()]++
			mu.Unlock()
			_ = d.Ack(ctx) // a failed ack leaves it pending: it comes again
		}
	}()

	back := make(chan struct{}) // closed once the killed server answers again
	afterBack := 0
	send := func(m *message.Message) {
		for {
			err := tr.Send(context.Background(), m)
			if err == nil {
				return
			}
			require.ErrorIs(t, err, transport.ErrUnavailable)
			// Retried once Redis is back; after that a retry fails only
			// on a pooled connection to the killed server, each once.
			select {
			case <-back:
				afterBack++
				require.Less(t, afterBack, 1000, "Send still fails with Redis back: %v", err)
			case <-time.After(waitLong):
				t.Fatalf("Redis was not started again within %v (Send: %v)", waitLong, err)
			}
		}
	}
	var sent []string
	for i := range 300 {
		if i == 150 {
			srv.kill()
			err := tr.Send(context.Background(), newMessage(topic, `{}`))
			require.ErrorIs(t, err, transport.ErrUnavailable, "Send while Redis is down")
			require.ErrorIs(t, tr.Check(ctx), transport.ErrUnavailable, "the health check sees Redis down")
			go func() {
				// Time, not an event: Redis stays down 300 ms, so that sends meet the outage.
				time.Sleep(300 * time.Millisecond)
				srv.start()
				close(back)
			}()
		}
		m := newMessage(topic, `{"i":1}`)
		send(m)
		sent = append(sent, m.ID())
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range sent {
			if got[id] == 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "messages lost over the restart")
	cancel()
	<-recvDone
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	t.Logf("%d messages received over a restart, %d delivered twice", len(sent), dups)
}

// A stream deleted under a consumer (as by a restart of a Redis that keeps
// nothing on disk) gets its group again, and the consumer receives what is
// sent afterwards.
func TestGroupCreatedAgain(t *testing.T) {
	t.Parallel()
	topic := uniqueName("lost.")
	deleteKeysAtCleanup(t, topic)
	tr := newTransport(t, Config{Block: 100 * time.Millisecond})
	c := subscribe(t, tr, uniqueName("cap.queue.lost."), topic)
	require.NoError(t, admin(t).Del(context.Background(), topic).Err())
	require.Eventually(t, func() bool {
		n, err := admin(t).Exists(context.Background(), topic).Result()
		return err == nil && n == 1
	}, waitLong, 20*time.Millisecond, "the stream and its group were not created again")
	msg := newMessage(topic, `{}`)
	require.NoError(t, tr.Send(context.Background(), msg))
	d := receive(t, c, waitLong)
	require.Equal(t, msg.ID(), d.Message().ID())
	require.NoError(t, d.Ack(context.Background()))
}
