package nats_test

import (
	"context"
	"fmt"
	"os"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage/memory"
	capnats "github.com/go-cap/cap/transport/nats"
)

// A bus on NATS JetStream. The stream "orders" is created with file storage
// by the subscription, and the durable consumer carries CAP's name.
func Example() {
	url := os.Getenv("CAP_TEST_NATS")
	if url == "" {
		fmt.Println(capnats.DurableName("cap.queue.billing.v1", "orders.created"))
		return // needs a server
	}
	tr, err := capnats.New(capnats.Config{URL: url})
	if err != nil {
		fmt.Println(err)
		return
	}
	bus, err := cap.New(memory.New(), tr, cap.Options{DefaultGroup: "cap.queue.billing"})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = cap.Subscribe(bus, "orders.created", "", func(ctx context.Context, m cap.Msg[map[string]int]) error {
		return nil
	})
	if err := bus.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		_ = bus.Shutdown(context.Background())
		_ = tr.JetStream().DeleteStream(context.Background(), "orders") // the example's own
	}()
	fmt.Println(capnats.DurableName("cap.queue.billing.v1", "orders.created"))
	// Output: cap_queue_billing_v1-orders_created
}
