package rabbitmq

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/internal/testwait"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/memory"
)

type customerRecharged struct {
	CustomerID int     `json:"CustomerId"`
	Amount     float64 `json:"Amount"`
}

// newBus returns a bus on the memory storage and this transport, not yet
// started. Its group names end in ".v1".
func newBus(t *testing.T) *cap.Bus[*memory.Tx] {
	t.Helper()
	wid := int64(7)
	bus, err := cap.New(memory.New(), newTransport(t, Config{}), cap.Options{
		WorkerID: &wid, PollInterval: 50 * time.Millisecond, Logger: testLogger(t),
	})
	require.NoError(t, err)
	return bus
}

func startBus(t *testing.T, bus *cap.Bus[*memory.Tx]) {
	t.Helper()
	require.NoError(t, bus.Start(context.Background()))
	t.Cleanup(func() { _ = bus.Shutdown(context.Background()) })
}

// A cap.Subscribe handler handles a message a .NET CAP service published.
func TestBusHandlesDotNetMessage(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	topic := uniqueName("CustomerRecharged.")
	group := uniqueName("cap.queue.billing.")
	deleteQueueAtCleanup(t, group+".v1")

	got := make(chan cap.Msg[customerRecharged], 1)
	require.NoError(t, cap.Subscribe(bus, topic, group, func(ctx context.Context, m cap.Msg[customerRecharged]) error {
		got <- m
		return nil
	}))
	startBus(t, bus)

	const id = "6757258586250821635"
	require.NoError(t, adminChannel(t).PublishWithContext(context.Background(), "cap.default.router", topic, false, false, amqp.Publishing{
		Headers: amqp.Table{
			"cap-callback-name": nil,
			"cap-msg-id":        id,
			"cap-corr-id":       id,
			"cap-corr-seq":      "0",
			"cap-msg-name":      topic,
			"cap-msg-type":      "CustomerRechargedEvent",
			"cap-senttime":      "03/23/2025 19:26:26",
		},
		MessageId:    id,
		DeliveryMode: amqp.Persistent,
		Body:         []byte(`{"CustomerId":42,"Amount":100.5}`),
	}))

	var m cap.Msg[customerRecharged]
	select {
	case m = <-got:
	case <-time.After(waitLong):
		t.Fatal("the handler did not run")
	}
	require.Equal(t, id, m.ID)
	require.Equal(t, topic, m.Topic)
	require.Equal(t, group+".v1", m.Group)
	require.Equal(t, customerRecharged{CustomerID: 42, Amount: 100.5}, m.Payload)
	require.Equal(t, "CustomerRechargedEvent", m.Headers[message.HeaderType])
	require.Equal(t, "03/23/2025 19:26:26", m.Headers[message.HeaderSentTime])

	// The Received row reaches Succeeded.
	testwait.UntilNil(t, waitLong, func() error {
		recs, _, err := bus.Storage().List(context.Background(), storage.Received, storage.ListQuery{Name: topic})
		require.NoError(t, err)
		if len(recs) == 1 && recs[0].Status == storage.StatusSucceeded {
			require.Equal(t, group+".v1", recs[0].Group)
			return nil
		}
		return fmt.Errorf("Received row not Succeeded: %+v", recs)
	})
}

// bus.Publish sends what a .NET CAP consumer expects on its queue.
func TestBusPublishesForDotNet(t *testing.T) {
	t.Parallel()
	bus := newBus(t)
	topic := uniqueName("OrderCreated.")
	queue := uniqueName("cap.queue.dotnet.")
	deleteQueueAtCleanup(t, queue)
	admin := adminChannel(t)
	declareLikeCAP(t, admin, queue, topic)
	startBus(t, bus)

	require.NoError(t, bus.Publish(context.Background(), topic, customerRecharged{CustomerID: 7, Amount: 1}))

	var d amqp.Delivery
	testwait.Until(t, waitLong, func() bool {
		var ok bool
		var err error
		d, ok, err = admin.Get(queue, true)
		require.NoError(t, err)
		return ok
	}, "nothing published")
	id, ok := d.Headers["cap-msg-id"].(string)
	require.True(t, ok, "cap-msg-id is a string: %#v", d.Headers)
	require.Equal(t, id, d.MessageId)
	_, err := strconv.ParseInt(id, 10, 64)
	require.NoError(t, err, "a snowflake id")
	require.Equal(t, uint8(2), d.DeliveryMode)
	require.Equal(t, topic, d.RoutingKey)
	require.Equal(t, topic, d.Headers["cap-msg-name"])
	require.Equal(t, id, d.Headers["cap-corr-id"])
	require.Equal(t, "0", d.Headers["cap-corr-seq"])
	require.NotEmpty(t, d.Headers["cap-msg-type"])
	sent, ok := d.Headers["cap-senttime"].(string)
	require.True(t, ok)
	_, err = time.Parse(message.SentTimeLayout, sent)
	require.NoError(t, err, "cap-senttime %q in MM/dd/yyyy HH:mm:ss", sent)
	require.JSONEq(t, `{"CustomerId":7,"Amount":1}`, string(d.Body))
}
