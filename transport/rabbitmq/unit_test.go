package rabbitmq

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Config{}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, DefaultURL, cfg.URL)
	require.Equal(t, "cap.default.router", cfg.exchange())
	require.Equal(t, DefaultPrefetch, cfg.Prefetch)
	require.Equal(t, DefaultPublishChannels, cfg.PublishChannels)
	require.Equal(t, amqp.Table{"x-message-ttl": int32(864000000)}, cfg.queueArgs())

	cfg, err = Config{Version: "v2", ExchangeName: "orders", QueueType: "quorum", QueueArgs: amqp.Table{"x-queue-mode": "lazy"}}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, "orders.v2", cfg.exchange())
	require.Equal(t, amqp.Table{"x-message-ttl": int32(864000000), "x-queue-type": "quorum", "x-queue-mode": "lazy"}, cfg.queueArgs())

	cfg, err = Config{MessageTTL: -1}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, amqp.Table{}, cfg.queueArgs())

	cfg, err = Config{MessageTTL: 30 * 24 * time.Hour}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, int64(30*24*3600*1000), cfg.queueArgs()["x-message-ttl"])
}

func TestConfigRefused(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]Config{
		"bad scheme":        {URL: "http://localhost"},
		"bad second URL":    {URLs: []string{"nats://x"}},
		"negative prefetch": {Prefetch: -1},
		"prefetch too big":  {Prefetch: 70000},
		"negative channels": {PublishChannels: -2},
	} {
		_, err := New(cfg)
		require.ErrorIs(t, err, ErrConfig, name)
	}
}

func TestRedactHidesPassword(t *testing.T) {
	t.Parallel()
	s := redact("amqp://user:secret@host:5672/vh")
	require.NotContains(t, s, "secret")
	require.Contains(t, s, "host")
}

func TestHeaderConversion(t *testing.T) {
	t.Parallel()
	when := time.Date(2025, 7, 1, 19, 44, 38, 0, time.UTC)
	h := fromTable(amqp.Table{
		"s":     "text",
		"bytes": []byte("6757258586250821633"),
		"void":  nil,
		"i8":    int8(-3),
		"i16":   int16(300),
		"i32":   int32(70000),
		"i64":   int64(6757258586250821633),
		"u8":    uint8(200),
		"f32":   float32(1.5),
		"f64":   0.25,
		"bool":  true,
		"dec":   amqp.Decimal{Scale: 2, Value: 12345},
		"time":  when,
		"table": amqp.Table{"a": []byte("b")},
		"array": []any{int32(1), "x"},
	})
	require.Equal(t, message.Headers{
		"s":     "text",
		"bytes": "6757258586250821633",
		"void":  "",
		"i8":    "-3",
		"i16":   "300",
		"i32":   "70000",
		"i64":   "6757258586250821633",
		"u8":    "200",
		"f32":   "1.5",
		"f64":   "0.25",
		"bool":  "true",
		"dec":   "123.45",
		"time":  "2025-07-01T19:44:38Z",
		"table": `{"a":"b"}`,
		"array": `[1,"x"]`,
	}, h)

	tbl := toTable(message.Headers{"cap-callback-name": "", "cap-msg-id": "1"})
	require.Equal(t, amqp.Table{"cap-callback-name": nil, "cap-msg-id": "1"}, tbl)
	require.NoError(t, tbl.Validate())
}

// An address nobody listens on: sends and subscriptions fail at once with
// ErrUnavailable rather than hanging.
func TestUnreachableBrokerFailsFast(t *testing.T) {
	t.Parallel()
	tr, err := New(Config{URL: "amqp://guest:guest@127.0.0.1:1/", Logger: testLogger(t), DialTimeout: time.Second})
	require.NoError(t, err)
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	start := time.Now()
	err = tr.Send(ctx, newMessage("a.b", "{}"))
	require.ErrorIs(t, err, transport.ErrUnavailable)
	errs := tr.SendBatch(ctx, []*message.Message{newMessage("a", "1"), newMessage("b", "2")})
	require.Len(t, errs, 2)
	require.ErrorIs(t, errs[0], transport.ErrUnavailable)
	require.ErrorIs(t, errs[1], transport.ErrUnavailable)
	_, err = tr.Subscribe(ctx, "g", []string{"a"})
	require.ErrorIs(t, err, transport.ErrUnavailable)
	require.Less(t, time.Since(start), 3*time.Second)

	require.NoError(t, tr.Close())
	require.ErrorIs(t, tr.Send(ctx, newMessage("a", "1")), transport.ErrClosed)
}

func TestWanted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		patterns []string
		key      string
		want     bool
	}{
		{[]string{"a.b"}, "a.b", true},
		{[]string{"a.*.c"}, "a.x.c", true},
		{[]string{"a.*.c"}, "a.x-y.c", false}, // RabbitMQ routes it, CAP's * is [0-9a-zA-Z]+
		{[]string{"a.#"}, "a.x.y", true},
		{[]string{"a.#"}, "a", false}, // RabbitMQ's # matches zero words
		{[]string{"a.#", "a"}, "a", true},
		{[]string{"a.b"}, "other.topic", true}, // another consumer's binding: pass on
		{[]string{"#.x"}, "x", false},
		{[]string{"#"}, "anything.at.all", true},
	} {
		require.Equal(t, tc.want, wanted(tc.patterns, tc.key), "%v %q", tc.patterns, tc.key)
	}
	require.True(t, amqpMatch("a.#.b", "a.b"))
	require.True(t, amqpMatch("a.#.b", "a.x.y.b"))
	require.False(t, amqpMatch("a.*", "a"))
	require.False(t, amqpMatch("A.b", "a.b"))
}
