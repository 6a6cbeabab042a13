package kafka_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage/memory"
	"github.com/go-cap/cap/transport/kafka"
)

// A bus on Kafka: topics are created with three partitions on first use,
// and a group subscribed with a wildcard picks up matching topics created
// later within a minute. (Compiled, not run: it needs a broker.)
func Example() {
	tr, err := kafka.New(kafka.Config{
		Brokers:              []string{"kafka-1:9092", "kafka-2:9092"},
		NumPartitions:        3,
		ReplicationFactor:    2,
		TopicRefreshInterval: time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}
	bus, err := cap.New(memory.New(), tr, cap.Options{})
	if err != nil {
		log.Fatal(err)
	}
	err = cap.Subscribe(bus, "orders.*", "billing", func(ctx context.Context, m cap.Msg[map[string]any]) error {
		fmt.Println(m.Topic, m.Payload)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = bus.Shutdown(context.Background()) }()
	if err := bus.Publish(context.Background(), "orders.created", map[string]any{"id": 42}); err != nil {
		log.Fatal(err)
	}
}
