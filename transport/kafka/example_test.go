package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage/memory"
	"github.com/go-cap/cap/transport"
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

// Check asks a broker for the cluster's metadata over a new connection,
// with the transport's TLS and SASL: it passes with the credentials the
// broker knows and fails with ErrAuth, not ErrUnavailable, with a wrong
// password. (The broker here is an in-process kfake with SASL; set
// Config.TLS as well for SASL_SSL.)
func ExampleTransport_Check() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("SCRAM-SHA-512", "billing", "s3cret"))
	if err != nil {
		log.Fatal(err)
	}
	defer cluster.Close()
	for _, password := range []string{"s3cret", "wrong"} {
		mech, err := scram.Mechanism(scram.SHA512, "billing", password)
		if err != nil {
			log.Fatal(err)
		}
		tr, err := kafka.New(kafka.Config{Brokers: cluster.ListenAddrs(), SASL: mech})
		if err != nil {
			log.Fatal(err)
		}
		err = tr.Check(context.Background())
		fmt.Printf("%s: healthy %v, ErrAuth %v, ErrUnavailable %v\n", password,
			err == nil, errors.Is(err, kafka.ErrAuth), errors.Is(err, transport.ErrUnavailable))
		_ = tr.Close()
	}
	// Output:
	// s3cret: healthy true, ErrAuth false, ErrUnavailable false
	// wrong: healthy false, ErrAuth true, ErrUnavailable false
}
