package nats

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/internal/testwait"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/memory"
	"github.com/go-cap/cap/transport"
)

type customerRecharged struct {
	CustomerID int     `json:"CustomerId"`
	Amount     float64 `json:"Amount"`
}

// newBus returns a bus on the memory storage and this transport, not yet
// started. Its group names end in ".v1".
func newBus(t *testing.T, opts cap.Options) *cap.Bus[*memory.Tx] {
	t.Helper()
	wid := int64(7)
	opts.WorkerID, opts.PollInterval, opts.Logger = &wid, 50*time.Millisecond, testLogger(t)
	bus, err := cap.New(memory.New(), newTransport(t, Config{}), opts)
	require.NoError(t, err)
	return bus
}

func startBus(t *testing.T, bus *cap.Bus[*memory.Tx]) {
	t.Helper()
	require.NoError(t, bus.Start(context.Background()))
	t.Cleanup(func() { _ = bus.Shutdown(context.Background()) })
}

// createStreamLikeCAP creates the stream as a .NET CAP consumer does
// (reference 5.3): named after the first word, its subjects the group's
// topics, memory storage.
func createStreamLikeCAP(t *testing.T, js jetstream.JetStream, stream string, subjects ...string) {
	t.Helper()
	_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: stream, Subjects: subjects, Storage: jetstream.MemoryStorage,
	})
	require.NoError(t, err)
}

// publishLikeCAP publishes as CAP's NATS transport does: the subject is the
// name, Nats-Msg-Id the message id, CAP's headers as NATS headers.
func publishLikeCAP(t *testing.T, js jetstream.JetStream, topic, id string, body []byte) {
	t.Helper()
	h := nats.Header{}
	for k, v := range map[string]string{
		"cap-callback-name": "",
		"cap-msg-id":        id,
		"cap-corr-id":       id,
		"cap-corr-seq":      "0",
		"cap-msg-name":      topic,
		"cap-msg-type":      "CustomerRechargedEvent",
		"cap-senttime":      "03/23/2025 19:26:26",
	} {
		h[k] = []string{v}
	}
	ack, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: topic, Header: h, Data: body}, jetstream.WithMsgID(id))
	require.NoError(t, err)
	require.NotZero(t, ack.Sequence)
}

// A message published exactly as a .NET CAP service publishes it, into a
// stream CAP created, is handled by a Go subscriber; the Go service extends
// CAP's stream instead of replacing its subjects.
func TestBusHandlesDotNetMessage(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	topic, stream := newTopic(t, url, "CustomerRecharged")
	js := admin(t, url)
	createStreamLikeCAP(t, js, stream, stream+".DotNetOnly")

	bus := newBus(t, cap.Options{})
	group := uniqueName("cap.queue.billing.")
	got := make(chan cap.Msg[customerRecharged], 1)
	require.NoError(t, cap.Subscribe(bus, topic, group, func(ctx context.Context, m cap.Msg[customerRecharged]) error {
		got <- m
		return nil
	}))
	startBus(t, bus)

	const id = "6757258586250821635"
	publishLikeCAP(t, js, topic, id, []byte(`{"CustomerId":42,"Amount":100.5}`))

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
	require.Equal(t, id, m.Headers["Nats-Msg-Id"], "CAP's consumers copy Nats-Msg-Id into the headers too")

	info, err := js.Stream(context.Background(), stream)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{stream + ".DotNetOnly", topic}, info.CachedInfo().Config.Subjects)

	// The durable consumer has CAP's name.
	_, err = js.Consumer(context.Background(), stream, DurableName(group+".v1", topic))
	require.NoError(t, err)

	eventuallyStatus(t, bus, topic, storage.StatusSucceeded)
}

func eventuallyStatus(t *testing.T, bus *cap.Bus[*memory.Tx], topic string, want storage.Status) *storage.Record {
	t.Helper()
	var rec *storage.Record
	testwait.UntilNil(t, waitLong, func() error {
		recs, _, err := bus.Storage().List(context.Background(), storage.Received, storage.ListQuery{Name: topic})
		require.NoError(t, err)
		if len(recs) == 1 && recs[0].Status == want {
			rec = recs[0]
			return nil
		}
		return fmt.Errorf("Received row not %s: %+v", want, recs)
	})
	return rec
}

// bus.Publish sends what a .NET CAP consumer reads: CAP's headers, the JSON
// body, Nats-Msg-Id = cap-msg-id, on the subject of the name.
func TestBusPublishesForDotNet(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	topic, stream := newTopic(t, url, "OrderCreated")
	js := admin(t, url)
	createStreamLikeCAP(t, js, stream, topic)
	ctx := context.Background()
	cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: DurableName("cap.queue.dotnet.v1", topic), FilterSubject: topic,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	require.NoError(t, err)

	bus := newBus(t, cap.Options{})
	startBus(t, bus)
	require.NoError(t, bus.Publish(ctx, topic, customerRecharged{CustomerID: 7, Amount: 1}))

	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(waitLong))
	require.NoError(t, err)
	var msg jetstream.Msg
	for m := range batch.Messages() {
		msg = m
	}
	require.NoError(t, batch.Error())
	require.NotNil(t, msg, "nothing published")
	h := msg.Headers()
	id := h.Get("cap-msg-id")
	_, err = strconv.ParseInt(id, 10, 64)
	require.NoError(t, err, "a snowflake id")
	require.Equal(t, id, h.Get("Nats-Msg-Id"))
	require.Equal(t, topic, msg.Subject())
	require.Equal(t, topic, h.Get("cap-msg-name"))
	require.Equal(t, id, h.Get("cap-corr-id"))
	require.Equal(t, "0", h.Get("cap-corr-seq"))
	require.NotEmpty(t, h.Get("cap-msg-type"))
	_, err = time.Parse(message.SentTimeLayout, h.Get("cap-senttime"))
	require.NoError(t, err, "cap-senttime %q in MM/dd/yyyy HH:mm:ss", h.Get("cap-senttime"))
	require.JSONEq(t, `{"CustomerId":7,"Amount":1}`, string(msg.Data()))
	require.NoError(t, msg.Ack())
}

// A message from a producer that does not speak CAP (no cap-msg-id, no
// cap-msg-name) goes through Options.CustomHeaders, which can use the NATS
// message's id and subject.
func TestForeignMessageThroughCustomHeaders(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	topic, _ := newTopic(t, url, "sensor")
	bus := newBus(t, cap.Options{CustomHeaders: func(d transport.Delivery) message.Headers {
		meta, err := d.(*Delivery).Raw().Metadata()
		if err != nil {
			return nil
		}
		return message.Headers{
			message.HeaderMessageID:   strconv.FormatUint(meta.Sequence.Stream, 10),
			message.HeaderMessageName: d.Topic(),
		}
	}})
	got := make(chan cap.Msg[map[string]int], 2)
	require.NoError(t, cap.Subscribe(bus, topic, uniqueName("cap.queue.foreign."), func(ctx context.Context, m cap.Msg[map[string]int]) error {
		got <- m
		return nil
	}))
	startBus(t, bus)

	js := admin(t, url)
	ack, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: topic, Header: nats.Header{"x-origin": []string{"plc-7"}}, Data: []byte(`{"t":21}`)})
	require.NoError(t, err)
	select {
	case m := <-got:
		require.Equal(t, strconv.FormatUint(ack.Sequence, 10), m.ID)
		require.Equal(t, topic, m.Topic)
		require.Equal(t, map[string]int{"t": 21}, m.Payload)
		require.Equal(t, "plc-7", m.Headers["x-origin"])
	case <-time.After(waitLong):
		t.Fatal("the foreign message was not handled")
	}
}

// Without CustomHeaders a foreign message is stored as Failed with a
// reason and acknowledged: it is not redelivered in a loop (CAP #1561).
func TestForeignMessageWithoutCustomHeadersIsFailedAndAcked(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	topic, stream := newTopic(t, url, "raw")
	bus := newBus(t, cap.Options{})
	group := uniqueName("cap.queue.foreign.")
	require.NoError(t, cap.Subscribe(bus, topic, group, func(ctx context.Context, m cap.Msg[map[string]int]) error {
		t.Error("the handler must not run for a message without CAP headers")
		return nil
	}))
	startBus(t, bus)
	js := admin(t, url)
	_, err := js.Publish(context.Background(), topic, []byte("not even json"))
	require.NoError(t, err)

	eventuallyStatus(t, bus, topic, storage.StatusFailed)
	cons, err := js.Consumer(context.Background(), stream, DurableName(group+".v1", topic))
	require.NoError(t, err)
	testwait.UntilNil(t, waitLong, func() error {
		info, err := cons.Info(context.Background())
		require.NoError(t, err)
		if info.NumAckPending == 0 && info.AckFloor.Consumer == 1 {
			require.Zero(t, info.NumRedelivered)
			return nil
		}
		return fmt.Errorf("the foreign message was not acked: %+v", info)
	})
}
