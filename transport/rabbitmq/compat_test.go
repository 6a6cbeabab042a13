package rabbitmq

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
)

// capQueueArgs are the arguments DotNetCore.CAP declares a group's queue
// with (RabbitMQOptions.QueueArguments: MessageTTL as an int).
var capQueueArgs = amqp.Table{"x-message-ttl": int32(864000000)}

// declareLikeCAP declares the exchange and a group's queue exactly as a .NET
// CAP service does and binds topic. The broker refuses a declaration that
// differs from an existing one, so this also checks that the transport
// declares them the same way.
func declareLikeCAP(t *testing.T, ch *amqp.Channel, group, topic string) {
	t.Helper()
	require.NoError(t, ch.ExchangeDeclare("cap.default.router", "topic", true, false, false, false, nil))
	_, err := ch.QueueDeclare(group, true, false, false, false, capQueueArgs)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(group, topic, "cap.default.router", false, nil))
}

// A message published the way a .NET CAP service publishes it (reference
// 2.1 and 5.1) reaches a consumer of the transport with every header.
func TestReceiveFromDotNetCAP(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{})
	topic := uniqueName("CustomerRecharged.")
	c, group := subscribe(t, tr, topic)

	admin := adminChannel(t)
	declareLikeCAP(t, admin, group, topic) // same declarations: no PRECONDITION_FAILED

	const id = "6757258586250821633"
	body := []byte(`{"CustomerId":42,"Amount":100.5,"Note":"\u81EA\u52A8"}`)
	headers := amqp.Table{
		"cap-callback-name": nil, // CAP writes a null callback as void
		"cap-msg-id":        id,
		"cap-corr-id":       id,
		"cap-corr-seq":      "0",
		"cap-msg-name":      topic,
		"cap-msg-type":      "CustomerRechargedEvent",
		"cap-senttime":      "03/23/2025 19:26:26",
	}
	require.NoError(t, admin.PublishWithContext(context.Background(), "cap.default.router", topic, false, false, amqp.Publishing{
		Headers:      headers,
		MessageId:    id,
		DeliveryMode: amqp.Persistent,
		Body:         body,
	}))

	d := receive(t, c, waitLong)
	require.Equal(t, message.Headers{
		"cap-callback-name": "",
		"cap-msg-id":        id,
		"cap-corr-id":       id,
		"cap-corr-seq":      "0",
		"cap-msg-name":      topic,
		"cap-msg-type":      "CustomerRechargedEvent",
		"cap-senttime":      "03/23/2025 19:26:26",
	}, d.Message().Headers)
	require.Equal(t, body, d.Message().Body)
	require.Equal(t, topic, d.Topic())
	require.Equal(t, id, d.(*Delivery).Raw().MessageId)
	sent, err := message.ParseSentTime(d.Message().Headers[message.HeaderSentTime])
	require.NoError(t, err)
	require.Equal(t, time.Date(2025, 3, 23, 19, 26, 26, 0, time.UTC), sent)
	require.NoError(t, d.Ack(context.Background()))
}

// A message sent through the transport, read raw from a queue a .NET CAP
// service declared, has exactly CAP's headers, body, MessageId and
// persistent delivery mode.
func TestSendToDotNetCAP(t *testing.T) {
	t.Parallel()
	topic := uniqueName("OrderCreated.")
	group := uniqueName("cap.queue.dotnet.")
	deleteQueueAtCleanup(t, group)
	admin := adminChannel(t)
	declareLikeCAP(t, admin, group, topic)

	tr := newTransport(t, Config{})
	const id = "6757258586250821634"
	msg := &message.Message{
		Headers: message.Headers{
			"cap-callback-name": "",
			"cap-msg-id":        id,
			"cap-corr-id":       id,
			"cap-corr-seq":      "0",
			"cap-msg-name":      topic,
			"cap-msg-type":      "OrderCreated",
			"cap-senttime":      "07/01/2025 19:44:38",
		},
		Body: []byte(`{"Id":42,"Total":"9.90"}`),
	}
	require.NoError(t, tr.Send(context.Background(), msg))

	got, ok, err := admin.Get(group, false)
	require.NoError(t, err)
	require.True(t, ok, "no message in the queue")
	require.NoError(t, got.Ack(false))
	require.Equal(t, "cap.default.router", got.Exchange)
	require.Equal(t, topic, got.RoutingKey)
	require.Equal(t, id, got.MessageId)
	require.Equal(t, uint8(2), got.DeliveryMode)
	require.Empty(t, got.ContentType, "CAP sets no content type")
	require.Equal(t, msg.Body, got.Body)
	require.Equal(t, amqp.Table{
		"cap-callback-name": nil,
		"cap-msg-id":        id,
		"cap-corr-id":       id,
		"cap-corr-seq":      "0",
		"cap-msg-name":      topic,
		"cap-msg-type":      "OrderCreated",
		"cap-senttime":      "07/01/2025 19:44:38",
	}, got.Headers)
	for k, v := range got.Headers {
		if v != nil {
			require.IsType(t, "", v, "header %s must be an AMQP string", k)
		}
	}
}

// A message from a producer that does not speak CAP (the management UI, a
// script): no CAP headers, values of other AMQP types. The delivery gives
// the routing key, for the bus's HeadersBuilder, and string headers.
func TestForeignMessage(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{})
	topic := uniqueName("legacy.")
	c, _ := subscribe(t, tr, topic)

	admin := adminChannel(t)
	require.NoError(t, admin.PublishWithContext(context.Background(), "cap.default.router", topic, false, false, amqp.Publishing{
		Headers:   amqp.Table{"source": []byte("billing"), "attempt": int32(3), "urgent": true},
		MessageId: "ext-1",
		Body:      []byte("plain text"),
	}))

	d := receive(t, c, waitLong)
	require.Equal(t, topic, d.Topic())
	require.Equal(t, message.Headers{"source": "billing", "attempt": "3", "urgent": "true"}, d.Message().Headers)
	require.Empty(t, d.Message().ID())
	require.Equal(t, "ext-1", d.(*Delivery).Raw().MessageId)
	require.Equal(t, []byte("plain text"), d.Message().Body)
	require.NoError(t, d.Ack(context.Background()))
}
