package kafka

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
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
// started.
func newBus(t *testing.T, opts cap.Options) *cap.Bus[*memory.Tx] {
	t.Helper()
	wid := int64(7)
	opts.WorkerID = &wid
	opts.PollInterval = 50 * time.Millisecond
	opts.Logger = testLogger()
	bus, err := cap.New(memory.New(), newTransport(t, testConfig(t)), opts)
	require.NoError(t, err)
	return bus
}

func startBus(t *testing.T, bus *cap.Bus[*memory.Tx]) {
	t.Helper()
	require.NoError(t, bus.Start(context.Background()))
	t.Cleanup(func() { _ = bus.Shutdown(context.Background()) })
}

// rawWrite produces records with kafka-go directly, as another producer.
func rawWrite(t *testing.T, topic string, recs ...kafkago.Message) {
	t.Helper()
	w := &kafkago.Writer{
		Addr: kafkago.TCP(brokers(t)...), Topic: topic, RequiredAcks: kafkago.RequireAll,
		BatchTimeout: time.Millisecond, AllowAutoTopicCreation: true,
	}
	defer w.Close()
	require.NoError(t, w.WriteMessages(context.Background(), recs...))
}

// waitSucceeded waits until the bus has one Received row for topic, in
// state Succeeded.
func waitSucceeded(t *testing.T, bus *cap.Bus[*memory.Tx], topic string) *storage.Record {
	t.Helper()
	var rec *storage.Record
	testwait.UntilNil(t, waitLong, func() error {
		recs, _, err := bus.Storage().List(context.Background(), storage.Received, storage.ListQuery{Name: topic})
		require.NoError(t, err)
		if len(recs) == 1 && recs[0].Status == storage.StatusSucceeded {
			rec = recs[0]
			return nil
		}
		return fmt.Errorf("Received row not Succeeded: %+v", recs)
	})
	return rec
}

// A record produced exactly as CAP's Kafka transport produces it (key =
// cap-msg-id, every header as UTF-8 bytes, CAP's null as a null header, the
// JSON body as value) is handled by a Go subscriber.
func TestBusHandlesDotNetRecord(t *testing.T) {
	t.Parallel()
	bus := newBus(t, cap.Options{})
	topic := uniqueName("CustomerRecharged")
	group := uniqueName("cap.queue.billing.")
	got := make(chan cap.Msg[customerRecharged], 1)
	require.NoError(t, cap.Subscribe(bus, topic, group, func(ctx context.Context, m cap.Msg[customerRecharged]) error {
		got <- m
		return nil
	}))
	startBus(t, bus)

	const id = "6757258586250821633"
	rawWrite(t, topic, kafkago.Message{
		Key: []byte(id),
		Headers: []kafkago.Header{
			{Key: "cap-callback-name", Value: nil},
			{Key: "cap-msg-id", Value: []byte(id)},
			{Key: "cap-corr-id", Value: []byte(id)},
			{Key: "cap-corr-seq", Value: []byte("0")},
			{Key: "cap-msg-name", Value: []byte(topic)},
			{Key: "cap-msg-type", Value: []byte("CustomerRechargedEvent")},
			{Key: "cap-senttime", Value: []byte("03/23/2025 19:26:26")},
		},
		Value: []byte(`{"CustomerId":42,"Amount":100.5}`),
	})
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
	rec := waitSucceeded(t, bus, topic)
	require.Equal(t, group+".v1", rec.Group)
}

// bus.Publish produces what CAP's Kafka consumer reads: key = cap-msg-id,
// CAP's headers as UTF-8 bytes, the JSON body as value, on the topic named
// after the message.
func TestBusPublishesForDotNet(t *testing.T) {
	t.Parallel()
	bus := newBus(t, cap.Options{})
	topic := uniqueName("OrderCreated")
	// One partition, so that the record's place is known.
	admin := &kafkago.Client{Addr: kafkago.TCP(brokers(t)...), Timeout: 5 * time.Second}
	res, err := admin.CreateTopics(context.Background(), &kafkago.CreateTopicsRequest{
		Topics: []kafkago.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}},
	})
	require.NoError(t, err)
	require.NoError(t, res.Errors[topic])
	startBus(t, bus)
	require.NoError(t, bus.Publish(context.Background(), topic, customerRecharged{CustomerID: 7, Amount: 1}))

	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers: brokers(t), Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond,
	})
	defer r.Close()
	rec, err := r.ReadMessage(ctxT(t, waitLong))
	require.NoError(t, err)
	h := map[string]string{}
	for _, x := range rec.Headers {
		h[x.Key] = string(x.Value)
	}
	id := h["cap-msg-id"]
	_, err = strconv.ParseInt(id, 10, 64)
	require.NoError(t, err, "a snowflake id: %v", h)
	require.Equal(t, id, string(rec.Key), "the key is cap-msg-id")
	require.Equal(t, topic, h["cap-msg-name"])
	require.Equal(t, id, h["cap-corr-id"])
	require.Equal(t, "0", h["cap-corr-seq"])
	require.NotEmpty(t, h["cap-msg-type"])
	_, err = time.Parse(message.SentTimeLayout, h["cap-senttime"])
	require.NoError(t, err, "cap-senttime %q in MM/dd/yyyy HH:mm:ss", h["cap-senttime"])
	require.JSONEq(t, `{"CustomerId":7,"Amount":1}`, string(rec.Value))
}

// A record of a producer that does not speak CAP (no headers) is handled
// through Options.CustomHeaders, which sees the topic and the key; without
// the hook it is not lost but stored as Failed.
func TestBusForeignRecordThroughCustomHeaders(t *testing.T) {
	t.Parallel()
	topic := uniqueName("legacy.orders")
	bus := newBus(t, cap.Options{CustomHeaders: func(d transport.Delivery) message.Headers {
		kd, ok := d.(*Delivery)
		if !ok {
			return nil
		}
		return message.Headers{
			message.HeaderMessageID:   "9" + strconv.FormatInt(kd.Offset()+1000, 10),
			message.HeaderMessageName: d.Topic(),
			"x-key":                   string(kd.Key()),
		}
	}})
	group := uniqueName("cap.queue.legacy.")
	got := make(chan cap.Msg[map[string]int], 1)
	require.NoError(t, cap.Subscribe(bus, topic, group, func(ctx context.Context, m cap.Msg[map[string]int]) error {
		got <- m
		return nil
	}))
	startBus(t, bus)
	rawWrite(t, topic, kafkago.Message{Key: []byte("order-1"), Value: []byte(`{"total":7}`)})
	var m cap.Msg[map[string]int]
	select {
	case m = <-got:
	case <-time.After(waitLong):
		t.Fatal("the foreign record was not handled")
	}
	require.Equal(t, topic, m.Topic)
	require.Equal(t, "order-1", m.Headers["x-key"])
	require.Equal(t, map[string]int{"total": 7}, m.Payload)
	waitSucceeded(t, bus, topic)
}

// Records the bus cannot handle (no CAP headers and no CustomHeaders hook,
// a tombstone without a value, header bytes that are not UTF-8) are not
// lost: each becomes a Received row in state Failed, and the consumer goes
// on to the next record.
func TestBusKeepsBadRecords(t *testing.T) {
	t.Parallel()
	bus := newBus(t, cap.Options{})
	topic := uniqueName("bad.records")
	group := uniqueName("cap.queue.bad.")
	got := make(chan string, 1)
	require.NoError(t, cap.Subscribe(bus, topic, group, func(ctx context.Context, m cap.Msg[map[string]int]) error {
		got <- m.ID
		return nil
	}))
	startBus(t, bus)
	const goodID = "6757258586250821700"
	rawWrite(t, topic,
		kafkago.Message{Key: []byte("k"), Value: []byte(`{"a":1}`)},
		kafkago.Message{Key: []byte("tombstone")},
		kafkago.Message{Headers: []kafkago.Header{
			{Key: "cap-msg-id", Value: []byte{0xff, 0xfe}}, {Key: "cap-msg-name", Value: []byte(topic)},
		}, Value: []byte(`{"a":2}`)},
		kafkago.Message{Headers: []kafkago.Header{
			{Key: "cap-msg-id", Value: []byte(goodID)}, {Key: "cap-msg-name", Value: []byte(topic)},
		}, Value: []byte(`{"a":3}`)},
	)
	select {
	case id := <-got:
		require.Equal(t, goodID, id, "the good record after the bad ones is handled")
	case <-time.After(waitLong):
		t.Fatal("the good record was not handled")
	}
	testwait.UntilNil(t, waitLong, func() error {
		recs, _, err := bus.Storage().List(context.Background(), storage.Received, storage.ListQuery{})
		require.NoError(t, err)
		failed := 0
		for _, r := range recs {
			if r.Status == storage.StatusFailed {
				failed++
			}
		}
		if failed != 3 {
			return fmt.Errorf("want 3 Failed rows, have %d of %d: %+v", failed, len(recs), recs)
		}
		return nil
	})
}
