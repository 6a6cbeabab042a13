package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/transporttest"
)

const waitLong = 15 * time.Second

var (
	serverOnce sync.Once
	serverErr  error
)

// serverURL returns the test server's URL, skipping the test (failing it
// when CI=true) when the server cannot be reached.
func serverURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("CAP_TEST_REDIS")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	serverOnce.Do(func() {
		opts, err := goredis.ParseURL(url)
		if err != nil {
			serverErr = err
			return
		}
		rdb := goredis.NewClient(opts)
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		serverErr = rdb.Ping(ctx).Err()
	})
	if serverErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("Redis at %s unreachable: %v", url, serverErr)
		}
		t.Skipf("Redis at %s unreachable (set CAP_TEST_REDIS): %v", url, serverErr)
	}
	return url
}

// admin returns a plain client on the test server, closed at the end of
// the test.
func admin(t testing.TB) *goredis.Client {
	t.Helper()
	opts, err := goredis.ParseURL(serverURL(t))
	require.NoError(t, err)
	rdb := goredis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// deleteKeysAtCleanup removes stream keys when the test ends, after the
// transports created later in the test have closed.
func deleteKeysAtCleanup(t testing.TB, keys ...string) {
	t.Helper()
	url := serverURL(t)
	t.Cleanup(func() {
		opts, _ := goredis.ParseURL(url)
		rdb := goredis.NewClient(opts)
		defer rdb.Close()
		if err := rdb.Del(context.Background(), keys...).Err(); err != nil {
			t.Logf("delete %v: %v", keys, err)
		}
	})
}

// uniqueName returns a name no other test run uses.
func uniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newTransport returns a transport on the test server (unless cfg names
// another), closed at the end of the test.
func newTransport(t testing.TB, cfg Config) *Transport {
	t.Helper()
	if cfg.URL == "" && cfg.Options == nil {
		cfg.URL = serverURL(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	tr, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tr.Close()) })
	return tr
}

// subscribe opens a consumer of group on topics, closed at the end of the
// test.
func subscribe(t testing.TB, tr transport.Transport, group string, topics ...string) transport.Consumer {
	t.Helper()
	c, err := tr.Subscribe(context.Background(), group, topics)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
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
