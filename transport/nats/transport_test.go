package nats

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// Two services whose topics share a first word share one stream; the
// second one's subscription extends the stream's subjects and the first
// one keeps receiving (CAP's update would have unbound it).
func TestSharedStreamNotUnbound(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	topicA, stream := newTopic(t, url, "created")
	topicB := stream + ".shipped"
	svcA := newTransport(t, Config{})
	svcB := newTransport(t, Config{})
	cA, _ := subscribe(t, svcA, topicA)
	cB, _ := subscribe(t, svcB, topicB)

	info, err := admin(t, url).Stream(context.Background(), stream)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{topicA, topicB}, info.CachedInfo().Config.Subjects)
	require.Equal(t, "File", info.CachedInfo().Config.Storage.String(), "file storage by default")

	// A resubscription of A (its next start) leaves B's subject alone.
	cA2, _ := subscribe(t, svcA, topicA)
	_ = cA2.Close()

	for _, tr := range []*Transport{svcA, svcB} {
		a, b := newMessage(topicA, `"a"`), newMessage(topicB, `"b"`)
		require.NoError(t, tr.Send(context.Background(), a))
		require.NoError(t, tr.Send(context.Background(), b))
		da := receive(t, cA, waitLong)
		require.Equal(t, a.ID(), da.Message().ID())
		require.NoError(t, da.Ack(context.Background()))
		db := receive(t, cB, waitLong)
		require.Equal(t, b.ID(), db.Message().ID())
		require.NoError(t, db.Ack(context.Background()))
	}
}

// Memory storage is a choice of the config.
func TestMemoryStorageConfigurable(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	topic, stream := newTopic(t, url, "x")
	tr := newTransport(t, Config{Storage: jetstreamMemory})
	subscribe(t, tr, topic)
	info, err := admin(t, url).Stream(context.Background(), stream)
	require.NoError(t, err)
	require.Equal(t, "Memory", info.CachedInfo().Config.Storage.String())
}

// The same message id twice within the duplicate window is stored once: a
// retried send after a lost ack does not duplicate the message.
func TestSendDeduplicatesByMessageID(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	topic, _ := newTopic(t, url, "dup")
	tr := newTransport(t, Config{})
	c, _ := subscribe(t, tr, topic)
	m := newMessage(topic, `1`)
	require.NoError(t, tr.Send(context.Background(), m))
	require.Nil(t, tr.SendBatch(context.Background(), []*message.Message{m, m}))
	d := receive(t, c, waitLong)
	require.Equal(t, m.ID(), d.Message().ID())
	require.NoError(t, d.Ack(context.Background()))
	requireNothing(t, c, 500*time.Millisecond)
}

// Bad input gets a clear error and the rest of a batch is still sent.
func TestBadInput(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	topic, _ := newTopic(t, url, "bad")
	tr := newTransport(t, Config{})
	c, _ := subscribe(t, tr, topic)
	ctx := context.Background()

	noTopic := newMessage(topic, `1`)
	delete(noTopic.Headers, message.HeaderMessageName)
	require.ErrorIs(t, tr.Send(ctx, noTopic), ErrNoTopic)
	wild := newMessage(topic+".*", `1`)
	require.ErrorIs(t, tr.Send(ctx, wild), ErrInvalidTopic)
	space := newMessage("a b", `1`)
	require.ErrorIs(t, tr.Send(ctx, space), ErrInvalidTopic)
	badKey := newMessage(topic, `1`)
	badKey.Headers["bad key:"] = "x"
	require.Error(t, tr.Send(ctx, badKey))
	noStream := newMessage(uniqueName("Nostream")+".x", `1`)
	err := tr.Send(ctx, noStream)
	require.ErrorIs(t, err, ErrNoStream)
	require.ErrorIs(t, err, transport.ErrUnavailable, "a stream may appear later: a retry may succeed")

	good := newMessage(topic, `2`)
	errs := tr.SendBatch(ctx, []*message.Message{noTopic, good, wild, noStream})
	require.Len(t, errs, 4)
	require.ErrorIs(t, errs[0], ErrNoTopic)
	require.NoError(t, errs[1])
	require.ErrorIs(t, errs[2], ErrInvalidTopic)
	require.ErrorIs(t, errs[3], ErrNoStream)
	d := receive(t, c, waitLong)
	require.Equal(t, good.ID(), d.Message().ID())
	require.NoError(t, d.Ack(ctx))
	require.Error(t, d.Ack(ctx), "a second ack is refused")
	require.Error(t, d.Reject(ctx), "a reject after an ack is refused")

	_, err = tr.Subscribe(ctx, "g", []string{"*.created"})
	require.ErrorIs(t, err, ErrInvalidTopic)
	_, err = tr.Subscribe(ctx, "", []string{topic})
	require.Error(t, err)
	_, err = tr.Subscribe(ctx, "g", nil)
	require.Error(t, err)

	_, err = New(Config{MaxInFlight: -1})
	require.ErrorIs(t, err, ErrConfig)
	_, err = New(Config{AckWait: -time.Second})
	require.ErrorIs(t, err, ErrConfig)
}

// MaxInFlight bounds the deliveries a consumer hands out: with 2 held and
// unsettled, a third waits until one of them is settled.
func TestMaxInFlight(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	topic, _ := newTopic(t, url, "flight")
	tr := newTransport(t, Config{MaxInFlight: 2})
	c, _ := subscribe(t, tr, topic)
	ctx := context.Background()
	for i := range 3 {
		require.NoError(t, tr.Send(ctx, newMessage(topic, string(rune('0'+i)))))
	}
	d1 := receive(t, c, waitLong)
	receive(t, c, waitLong)
	requireNothing(t, c, 300*time.Millisecond)
	require.NoError(t, d1.Ack(ctx))
	d3 := receive(t, c, waitLong)
	require.NoError(t, d3.Ack(ctx))
}

// NakDelay delays the redelivery of a rejected message.
func TestNakDelay(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	topic, _ := newTopic(t, url, "nak")
	tr := newTransport(t, Config{NakDelay: 700 * time.Millisecond})
	c, _ := subscribe(t, tr, topic)
	ctx := context.Background()
	require.NoError(t, tr.Send(ctx, newMessage(topic, `1`)))
	d := receive(t, c, waitLong)
	rejected := time.Now()
	require.NoError(t, d.Reject(ctx))
	d = receive(t, c, waitLong)
	require.GreaterOrEqual(t, time.Since(rejected), 600*time.Millisecond)
	require.NoError(t, d.Ack(ctx))
}
