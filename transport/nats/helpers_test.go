package nats

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/transporttest"
)

const waitLong = 10 * time.Second

var (
	serverOnce sync.Once
	serverErr  error
)

// serverURL returns the test server's URL, skipping the test (failing it
// when CI=true) when the server cannot be reached.
func serverURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("CAP_TEST_NATS")
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	serverOnce.Do(func() {
		nc, err := nats.Connect(url, nats.Timeout(3*time.Second))
		if err != nil {
			serverErr = err
			return
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err = js.AccountInfo(ctx)
			cancel()
		}
		serverErr = err
	})
	if serverErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("NATS JetStream at %s unreachable: %v", url, serverErr)
		}
		t.Skipf("NATS JetStream at %s unreachable (set CAP_TEST_NATS): %v", url, serverErr)
	}
	return url
}

// uniqueName returns a name no other test run uses: one CAP word.
func uniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// admin returns a JetStream context on a connection of its own, closed at
// the end of the test.
func admin(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

// deleteStreamAtCleanup removes a stream (and its consumers) when the test
// ends, after the transports created later in the test have closed.
func deleteStreamAtCleanup(t testing.TB, url, stream string) {
	t.Helper()
	t.Cleanup(func() { deleteStreams(t, url, stream) })
}

func deleteStreams(t testing.TB, url string, streams ...string) {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Logf("delete streams %v: %v", streams, err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	for _, s := range streams {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := js.DeleteStream(ctx, s); err != nil && err != jetstream.ErrStreamNotFound {
			t.Logf("delete stream %s: %v", s, err)
		}
		cancel()
	}
}

// testLogger writes the transport's logs to the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newTransport returns a transport on the test server, closed at the end of
// the test. Fields of cfg left zero take the defaults.
func newTransport(t testing.TB, cfg Config) *Transport {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = serverURL(t)
	}
	if cfg.Name == "" {
		cfg.Name = uniqueName("cap-test-")
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	tr, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tr.Close()) })
	return tr
}

// newTopic returns a topic in a fresh stream that is deleted at the end of
// the test, and the stream's name.
func newTopic(t testing.TB, url, event string) (topic, stream string) {
	t.Helper()
	stream = uniqueName("Tst")
	deleteStreamAtCleanup(t, url, stream)
	return stream + "." + event, stream
}

// subscribe opens a consumer on a fresh group.
func subscribe(t testing.TB, tr transport.Transport, topics ...string) (transport.Consumer, string) {
	t.Helper()
	group := uniqueName("cap.test.group.")
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
