package faulttest

import (
	"log/slog"
	"time"

	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/redis"
)

func init() { RegisterTransport("redis", openRedis) }

// openRedis opens the Redis Streams transport on c.Broker (a redis:// URL).
// A killed consumer's pending entries are taken over after 3 s, the
// programs' lease, rather than the default 30 s, so that a scenario
// finishes quickly.
func openRedis(c *Config, log *slog.Logger) (transport.Transport, error) {
	return redis.New(redis.Config{
		URL:               c.Broker,
		ClaimIdle:         3 * time.Second,
		ClaimInterval:     500 * time.Millisecond,
		ConsumerName:      c.Prefix + "-" + c.Instance,
		ReconnectDelay:    100 * time.Millisecond,
		MaxReconnectDelay: time.Second,
		Logger:            log,
	})
}
