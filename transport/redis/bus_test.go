package redis

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap"
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

// receivedRows waits until the bus has n Received rows for topic, all with
// status, and returns them.
func receivedRows(t *testing.T, bus *cap.Bus[*memory.Tx], topic string, n int, status storage.Status) []*storage.Record {
	t.Helper()
	var recs []*storage.Record
	require.Eventually(t, func() bool {
		var err error
		recs, _, err = bus.Storage().List(context.Background(), storage.Received, storage.ListQuery{Name: topic})
		require.NoError(t, err)
		if len(recs) != n {
			return false
		}
		for _, r := range recs {
			if r.Status != status {
				return false
			}
		}
		return true
	}, waitLong, 20*time.Millisecond, "want %d Received rows %s for %s", n, status, topic)
	return recs
}

// requireNoPending checks that the group acknowledged every entry.
func requireNoPending(t *testing.T, rdb *goredis.Client, stream, group string) {
	t.Helper()
	require.Eventually(t, func() bool {
		p, err := rdb.XPending(context.Background(), stream, group).Result()
		return err == nil && p.Count == 0
	}, waitLong, 20*time.Millisecond, "entries of %s left pending in %s", stream, group)
}

// capEntry returns the fields of an entry exactly as DotNetCore.CAP's
// RedisStreams transport writes it (reference 5.4): headers as a JSON
// object with CAP's null callback, body as a base64 JSON string.
func capEntry(id, topic string, body []byte) []any {
	return []any{
		"headers", `{"cap-callback-name":null,"cap-msg-id":"` + id + `","cap-corr-id":"` + id +
			`","cap-corr-seq":"0","cap-msg-name":"` + topic + `","cap-msg-type":"CustomerRechargedEvent",` +
			`"cap-senttime":"03/23/2025 19:26:26"}`,
		"body", `"` + base64.StdEncoding.EncodeToString(body) + `"`,
	}
}

// A cap.Subscribe handler handles an entry written exactly as a .NET CAP
// service writes it.
func TestBusHandlesDotNetEntry(t *testing.T) {
	t.Parallel()
	bus := newBus(t, cap.Options{})
	topic := uniqueName("CustomerRecharged.")
	group := uniqueName("cap.queue.billing.")
	deleteKeysAtCleanup(t, topic)
	got := make(chan cap.Msg[customerRecharged], 1)
	require.NoError(t, cap.Subscribe(bus, topic, group, func(ctx context.Context, m cap.Msg[customerRecharged]) error {
		got <- m
		return nil
	}))
	startBus(t, bus)

	rdb := admin(t)
	const id = "6757258586250821635"
	require.NoError(t, rdb.XAdd(context.Background(), &goredis.XAddArgs{Stream: topic,
		Values: capEntry(id, topic, []byte(`{"CustomerId":42,"Amount":100.5}`))}).Err())

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
	recs := receivedRows(t, bus, topic, 1, storage.StatusSucceeded)
	require.Equal(t, group+".v1", recs[0].Group)
	requireNoPending(t, rdb, topic, group+".v1")
}

// bus.Publish writes what a .NET CAP consumer reads: CAP's two fields in
// CAP's order, every header in the headers object, the body base64 in a
// JSON string.
func TestBusPublishesForDotNet(t *testing.T) {
	t.Parallel()
	bus := newBus(t, cap.Options{})
	topic := uniqueName("OrderCreated.")
	deleteKeysAtCleanup(t, topic)
	rdb := admin(t)
	// A .NET consumer's group, created as CAP creates it.
	require.NoError(t, rdb.XGroupCreateMkStream(context.Background(), topic, "cap.queue.dotnet.v1", "$").Err())
	startBus(t, bus)

	require.NoError(t, bus.Publish(context.Background(), topic, customerRecharged{CustomerID: 7, Amount: 1}))

	var entries []goredis.XMessage
	require.Eventually(t, func() bool {
		var err error
		entries, err = rdb.XRange(context.Background(), topic, "-", "+").Result()
		require.NoError(t, err)
		return len(entries) == 1
	}, waitLong, 20*time.Millisecond)
	e := entries[0]
	require.Len(t, e.Values, 2, "CAP's two fields only: %v", e.Values)

	// The field order on the wire: headers, then body.
	raw, err := rdb.Do(context.Background(), "XRANGE", topic, "-", "+").Slice()
	require.NoError(t, err)
	fields := fieldNames(raw[0])
	require.Equal(t, []string{"headers", "body"}, fields)

	var headers map[string]*string
	require.NoError(t, json.Unmarshal([]byte(e.Values["headers"].(string)), &headers))
	id := *headers["cap-msg-id"]
	_, err = strconv.ParseInt(id, 10, 64)
	require.NoError(t, err, "a snowflake id")
	require.Equal(t, topic, *headers["cap-msg-name"])
	require.Equal(t, id, *headers["cap-corr-id"])
	require.Equal(t, "0", *headers["cap-corr-seq"])
	require.NotEmpty(t, *headers["cap-msg-type"])
	_, err = time.Parse(message.SentTimeLayout, *headers["cap-senttime"])
	require.NoError(t, err, "cap-senttime in MM/dd/yyyy HH:mm:ss")

	var b64 string
	require.NoError(t, json.Unmarshal([]byte(e.Values["body"].(string)), &b64), "body is a JSON string")
	body, err := base64.StdEncoding.DecodeString(b64)
	require.NoError(t, err, "body is base64")
	require.JSONEq(t, `{"CustomerId":7,"Amount":1}`, string(body))
}

// fieldNames returns the field names of one raw XRANGE entry, in order.
func fieldNames(entry any) []string {
	parts, _ := entry.([]any)
	if len(parts) != 2 {
		return nil
	}
	var names []string
	switch fv := parts[1].(type) {
	case []any:
		for i := 0; i < len(fv); i += 2 {
			names = append(names, fv[i].(string))
		}
	case map[any]any: // RESP3 map: order lost, never expected for XRANGE
		for k := range fv {
			names = append(names, k.(string))
		}
	}
	return names
}

// An entry from a producer that does not speak CAP (no headers field) goes
// through CustomHeaders when set; without it the bus stores it Failed and
// acknowledges it, and it is not delivered again.
func TestForeignEntries(t *testing.T) {
	t.Parallel()
	topic := uniqueName("legacy.")
	deleteKeysAtCleanup(t, topic)
	rdb := admin(t)

	t.Run("through CustomHeaders", func(t *testing.T) {
		bus := newBus(t, cap.Options{CustomHeaders: func(d transport.Delivery) message.Headers {
			rd, ok := d.(*Delivery)
			if !ok {
				return nil
			}
			return message.Headers{message.HeaderMessageID: "legacy-" + rd.Raw().Values["ref"].(string),
				message.HeaderMessageName: d.Topic()}
		}})
		got := make(chan cap.Msg[map[string]int], 4)
		require.NoError(t, cap.Subscribe(bus, topic, "foreign", func(ctx context.Context, m cap.Msg[map[string]int]) error {
			got <- m
			return nil
		}))
		startBus(t, bus)
		for _, ref := range []string{"a1", "a1", "b2"} {
			require.NoError(t, rdb.XAdd(context.Background(), &goredis.XAddArgs{Stream: topic,
				Values: []any{"ref", ref, "body", `{"n":` + ref[1:] + `}`}}).Err())
		}
		receivedRows(t, bus, topic, 2, storage.StatusSucceeded)
		payloads := map[string]map[string]int{}
		require.Eventually(t, func() bool {
			for len(got) > 0 {
				m := <-got
				require.Equal(t, topic, m.Topic)
				payloads[m.ID] = m.Payload
			}
			return len(payloads) == 2
		}, waitLong, 20*time.Millisecond)
		require.Equal(t, map[string]map[string]int{"legacy-a1": {"n": 1}, "legacy-b2": {"n": 2}}, payloads,
			"the copy of a1 is a duplicate")
		requireNoPending(t, rdb, topic, "foreign.v1")
		require.NoError(t, bus.Shutdown(context.Background()))
	})

	t.Run("without CustomHeaders", func(t *testing.T) {
		bus := newBus(t, cap.Options{})
		ran := make(chan struct{}, 1)
		require.NoError(t, cap.Subscribe(bus, topic, "plain", func(ctx context.Context, m cap.Msg[json.RawMessage]) error {
			ran <- struct{}{}
			return nil
		}))
		startBus(t, bus)
		require.NoError(t, rdb.XAdd(context.Background(), &goredis.XAddArgs{Stream: topic,
			Values: []any{"ref", "c3", "amount", "9"}}).Err())
		recs := receivedRows(t, bus, topic, 1, storage.StatusFailed)
		require.Contains(t, string(recs[0].Content), "cap-msg-id", "the reason names the missing header")
		require.Contains(t, string(recs[0].Content), `"Value":{"amount":"9","ref":"c3"}`, "the fields are kept as the body")
		requireNoPending(t, rdb, topic, "plain.v1")
		require.Never(t, func() bool {
			recs, _, _ := bus.Storage().List(context.Background(), storage.Received, storage.ListQuery{Name: topic})
			return len(recs) > 1
		}, time.Second, 50*time.Millisecond, "delivered again")
		require.Empty(t, ran)
	})
}

// Entries with a headers field that is not JSON, or a body that is not
// base64, are stored Failed with the decode error and their raw fields,
// acknowledged, and never delivered again; a good entry after them is
// handled.
func TestMalformedEntries(t *testing.T) {
	t.Parallel()
	topic := uniqueName("broken.")
	deleteKeysAtCleanup(t, topic)
	rdb := admin(t)
	bus := newBus(t, cap.Options{})
	got := make(chan string, 4)
	require.NoError(t, cap.Subscribe(bus, topic, "g", func(ctx context.Context, m cap.Msg[json.RawMessage]) error {
		got <- m.ID
		return nil
	}))
	startBus(t, bus)

	bad := [][]any{
		{"headers", `{"cap-msg-id":"1",`, "body", `"e30="`},
		{"headers", `{"cap-msg-id":"2","cap-msg-name":"` + topic + `"}`, "body", `"not base64!"`},
		{"headers", `[1,2]`, "body", `{"raw":true}`},
	}
	for _, v := range bad {
		require.NoError(t, rdb.XAdd(context.Background(), &goredis.XAddArgs{Stream: topic, Values: v}).Err())
	}
	good := capEntry("6757258586250821640", topic, []byte(`{}`))
	require.NoError(t, rdb.XAdd(context.Background(), &goredis.XAddArgs{Stream: topic, Values: good}).Err())

	select {
	case id := <-got:
		require.Equal(t, "6757258586250821640", id)
	case <-time.After(waitLong):
		t.Fatal("the good entry was not handled")
	}
	var failed []*storage.Record
	require.Eventually(t, func() bool {
		recs, _, err := bus.Storage().List(context.Background(), storage.Received, storage.ListQuery{Name: topic})
		require.NoError(t, err)
		failed = failed[:0]
		for _, r := range recs {
			if r.Status == storage.StatusFailed {
				failed = append(failed, r)
			}
		}
		return len(failed) == 3
	}, waitLong, 20*time.Millisecond)
	contents := ""
	for _, r := range failed {
		m, err := message.DecodeContent(r.Content)
		require.NoError(t, err)
		require.Contains(t, m.Headers[HeaderError], "malformed stream entry")
		require.NotEmpty(t, m.Headers[HeaderEntryID])
		contents += m.Headers[HeaderError] + m.Headers[HeaderRawHeaders] + string(m.Body) + "\n"
	}
	require.Contains(t, contents, "headers field is not a JSON object")
	require.Contains(t, contents, "body field is not base64")
	require.Contains(t, contents, `{"cap-msg-id":"1",`, "the raw headers are kept")
	require.Contains(t, contents, `"not base64!"`, "the raw body is kept")
	require.Contains(t, contents, `{"raw":true}`)
	requireNoPending(t, rdb, topic, "g.v1")
}
