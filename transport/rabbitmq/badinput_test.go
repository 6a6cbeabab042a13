package rabbitmq

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/message"
)

// A producer that is not CAP but sets CAP's headers in other AMQP types
// than strings (a Java client writes a long id and the topic as bytes) is
// understood: its headers reach the handler as text, and a second copy of
// the message is recognised as a duplicate by its numeric id.
func TestBusReadsHeadersOfAnyAMQPType(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	topic := uniqueName("Invoice.")
	group := uniqueName("cap.queue.java.")
	deleteQueueAtCleanup(t, group+".v1")
	got := make(chan cap.Msg[map[string]int], 2)
	require.NoError(t, cap.Subscribe(bus, topic, group, func(ctx context.Context, m cap.Msg[map[string]int]) error {
		got <- m
		return nil
	}))
	startBus(t, bus)

	when := time.Date(2025, 7, 1, 19, 44, 38, 0, time.UTC)
	for range 2 {
		require.NoError(t, adminChannel(t).PublishWithContext(context.Background(), "cap.default.router", topic, false, false, amqp.Publishing{
			Headers: amqp.Table{
				"cap-msg-id":        int64(6757258586250821637),
				"cap-msg-name":      []byte(topic),
				"cap-corr-seq":      int32(2),
				"cap-callback-name": nil,
				"x-sent":            when,
				"x-tags":            []any{[]byte("a"), int32(1)},
			},
			Body: []byte(`{"total":7}`),
		}))
	}
	var m cap.Msg[map[string]int]
	select {
	case m = <-got:
	case <-time.After(waitLong):
		t.Fatal("the message was not handled")
	}
	require.Equal(t, "6757258586250821637", m.ID)
	require.Equal(t, topic, m.Topic)
	require.Equal(t, map[string]int{"total": 7}, m.Payload)
	require.Equal(t, "2", m.Headers[message.HeaderCorrelationSequence])
	require.Equal(t, "2025-07-01T19:44:38Z", m.Headers["x-sent"])
	require.Equal(t, `["a",1]`, m.Headers["x-tags"])
	select {
	case m := <-got:
		t.Fatalf("the copy with the same id was handled again: %v", m.Headers)
	case <-time.After(time.Second):
	}
}
