package kafka

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/transporttest"
)

// The tests run against an in-process Kafka (kfake) over loopback TCP: one
// cluster of three brokers for the package, started on first use.
var (
	clusterOnce  sync.Once
	clusterAddrs []string
	clusterErr   error
)

// testPartitions is the partition count of the test cluster's topics.
const testPartitions = 3

func newCluster(opts ...kfake.Opt) (*kfake.Cluster, error) {
	opts = append([]kfake.Opt{
		kfake.NumBrokers(3),
		kfake.DefaultNumPartitions(testPartitions),
		kfake.GroupMinSessionTimeout(100 * time.Millisecond),
	}, opts...)
	return kfake.NewCluster(opts...)
}

// brokers returns the shared test cluster's addresses.
func brokers(t testing.TB) []string {
	t.Helper()
	clusterOnce.Do(func() {
		c, err := newCluster()
		if err != nil {
			clusterErr = err
			return
		}
		clusterAddrs = c.ListenAddrs()
	})
	if clusterErr != nil {
		t.Fatalf("start kfake: %v", clusterErr)
	}
	return clusterAddrs
}

// testConfig returns a config for the shared cluster with the short
// intervals the tests need.
func testConfig(t testing.TB) Config {
	return configFor(brokers(t))
}

// configFor returns a config for addrs with the short intervals the tests
// need.
func configFor(addrs []string) Config {
	return Config{
		Brokers:              addrs,
		TopicRefreshInterval: 300 * time.Millisecond,
		CommitInterval:       50 * time.Millisecond,
		HeartbeatInterval:    200 * time.Millisecond,
		SessionTimeout:       3 * time.Second,
		RebalanceTimeout:     5 * time.Second,
		RetryDelay:           200 * time.Millisecond,
		// A consumer's readers close when their fetch returns: a short
		// wait keeps each test's clean-up short.
		FetchMaxWait:   100 * time.Millisecond,
		DialTimeout:    2 * time.Second,
		ProduceTimeout: 3 * time.Second,
		Logger:         testLogger(),
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("CAP_TEST_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// newTransport returns a transport for cfg, closed at the end of the test.
func newTransport(t testing.TB, cfg Config) *Transport {
	t.Helper()
	tr, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// uniqueName returns a name no other test uses.
func uniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

var idSeq struct {
	sync.Mutex
	g *message.IDGenerator
}

func newID() string {
	idSeq.Lock()
	defer idSeq.Unlock()
	if idSeq.g == nil {
		idSeq.g, _ = message.NewIDGenerator(1)
	}
	return idSeq.g.NextString()
}

// newMessage returns a small CAP message for topic.
func newMessage(topic string) *message.Message {
	id := newID()
	return &message.Message{
		Headers: message.Headers{
			message.HeaderMessageID:   id,
			message.HeaderMessageName: topic,
			message.HeaderSentTime:    message.FormatSentTime(time.Now()),
		},
		Body: []byte(`{"id":` + id + `}`),
	}
}

// receive returns the next delivery within d.
func receive(t testing.TB, c transport.Consumer, d time.Duration) transport.Delivery {
	t.Helper()
	return transporttest.Receive(t, c, d)
}

// ctxT returns a context that ends with the test or after d.
func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
