package redis

import (
	"context"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
)

// A wildcard subscription finds a stream created after Subscribe, at the
// next refresh, and gets the entries added to it before it was found.
func TestWildcardFindsNewStream(t *testing.T) {
	t.Parallel()
	p := uniqueName("w")
	topic := p + ".order.created"
	deleteKeysAtCleanup(t, topic, p+".order.created.x")
	tr := newTransport(t, Config{WildcardRefresh: 100 * time.Millisecond})
	c := subscribe(t, tr, uniqueName("cap.queue.wild."), p+".*.created")
	requireNothing(t, c, 200*time.Millisecond)

	msg := newMessage(topic, `{}`) // creates the stream
	require.NoError(t, tr.Send(context.Background(), msg))
	require.NoError(t, tr.Send(context.Background(), newMessage(p+".order.created.x", `{}`)))
	d := receive(t, c, waitLong)
	require.Equal(t, msg.ID(), d.Message().ID())
	require.Equal(t, topic, d.Topic())
	require.NoError(t, d.Ack(context.Background()))
	requireNothing(t, c, 500*time.Millisecond)
}

// MaxLen trims a stream to about that many entries on send; MaxAge trims
// entries older than it.
func TestTrimming(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := admin(t)

	t.Run("MaxLen", func(t *testing.T) {
		topic := uniqueName("trim.len.")
		deleteKeysAtCleanup(t, topic)
		tr := newTransport(t, Config{MaxLen: 10})
		for range 5 {
			msgs := make([]*message.Message, 100)
			for i := range msgs {
				msgs[i] = newMessage(topic, `{}`)
			}
			require.Nil(t, tr.SendBatch(ctx, msgs))
		}
		n, err := rdb.XLen(ctx, topic).Result()
		require.NoError(t, err)
		require.Less(t, n, int64(250), "about MaxLen entries, give or take a node of the stream")
	})

	t.Run("MaxAge", func(t *testing.T) {
		topic := uniqueName("trim.age.")
		deleteKeysAtCleanup(t, topic)
		old := time.Now().Add(-2 * time.Hour).UnixMilli()
		for i := range 300 { // three nodes of entries two hours old
			require.NoError(t, rdb.XAdd(ctx, &goredis.XAddArgs{Stream: topic,
				ID: strconv.FormatInt(old, 10) + "-" + strconv.Itoa(i+1), Values: []any{"body", `""`}}).Err())
		}
		tr := newTransport(t, Config{MaxAge: time.Hour})
		require.NoError(t, tr.Send(ctx, newMessage(topic, `{}`)))
		n, err := rdb.XLen(ctx, topic).Result()
		require.NoError(t, err)
		require.Less(t, n, int64(201), "the entries older than MaxAge are trimmed, a node at a time")
	})
}
