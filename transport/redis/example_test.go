package redis_test

import (
	"context"
	"log"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage/memory"
	"github.com/go-cap/cap/transport/redis"
)

// A bus on Redis Streams: each subscribed topic is a stream, each group a
// consumer group. Entries a crashed instance left pending come back to
// another instance after ClaimIdle; streams are trimmed to about a day.
func Example() {
	ctx := context.Background()
	tr, err := redis.New(redis.Config{
		URL:       "redis://127.0.0.1:6379/0",
		ClaimIdle: 30 * time.Second,
		MaxAge:    24 * time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
	bus, err := cap.New(memory.New(), tr, cap.Options{DefaultGroup: "billing"})
	if err != nil {
		log.Fatal(err)
	}
	err = cap.Subscribe(bus, "order.created", "", func(ctx context.Context, m cap.Msg[map[string]int]) error {
		log.Printf("order %d", m.Payload["id"])
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil { // creates group billing.v1 on stream order.created
		log.Fatal(err)
	}
	defer bus.Shutdown(ctx)
	if err := bus.Publish(ctx, "order.created", map[string]int{"id": 42}); err != nil {
		log.Fatal(err)
	}
}
