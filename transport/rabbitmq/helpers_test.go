package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/transporttest"
)

var (
	brokerOnce sync.Once
	brokerErr  error
)

// brokerURL returns the test broker's URL, skipping the test (failing it
// when CI=true) when the broker cannot be reached.
func brokerURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("CAP_TEST_RABBITMQ")
	if url == "" {
		url = "amqp://guest:guest@127.0.0.1:5672/"
	}
	brokerOnce.Do(func() {
		conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
		if err != nil {
			brokerErr = err
			return
		}
		_ = conn.Close()
	})
	if brokerErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("RabbitMQ at %s unreachable: %v", redact(url), brokerErr)
		}
		t.Skipf("RabbitMQ at %s unreachable (set CAP_TEST_RABBITMQ): %v", redact(url), brokerErr)
	}
	return url
}

// uniqueName returns a name no other test run uses.
func uniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// adminChannel returns a channel on a connection of its own, closed at the
// end of the test.
func adminChannel(t testing.TB) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(brokerURL(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	return ch
}

// deleteQueueAtCleanup removes the queue when the test ends, after the
// transports created later in the test have closed.
func deleteQueueAtCleanup(t testing.TB, name string) {
	t.Helper()
	url := brokerURL(t)
	t.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			t.Logf("delete queue %s: %v", name, err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			t.Logf("delete queue %s: %v", name, err)
		}
	})
}

// deleteExchangeAtCleanup removes an exchange a test declared for itself.
func deleteExchangeAtCleanup(t testing.TB, name string) {
	t.Helper()
	url := brokerURL(t)
	t.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			_ = ch.ExchangeDelete(name, false, false)
		}
	})
}

// testLogger writes the transport's logs to the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newTransport returns a transport on the test broker, closed at the end of
// the test. Fields of cfg left zero take the defaults.
func newTransport(t testing.TB, cfg Config) *Transport {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = brokerURL(t)
	}
	if cfg.ConnectionName == "" {
		cfg.ConnectionName = uniqueName("cap-test-")
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	tr, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tr.Close()) })
	return tr
}

// subscribe opens a consumer on a fresh group whose queue is deleted at the
// end of the test.
func subscribe(t testing.TB, tr transport.Transport, topics ...string) (transport.Consumer, string) {
	t.Helper()
	group := uniqueName("cap.test.group.")
	deleteQueueAtCleanup(t, group)
	c, err := tr.Subscribe(context.Background(), group, topics)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c, group
}

// newMessage returns a message with CAP's publish headers for topic.
func newMessage(topic, body string) *message.Message {
	return transporttest.Message(topic, []byte(body))
}

// receive returns the next delivery or fails the test after timeout.
func receive(t testing.TB, c transport.Consumer, timeout time.Duration) transport.Delivery {
	t.Helper()
	return transporttest.Receive(t, c, timeout)
}

// requireNothing asserts that no delivery arrives within wait.
func requireNothing(t testing.TB, c transport.Consumer, wait time.Duration) {
	t.Helper()
	transporttest.RequireNothing(t, c, wait)
}
