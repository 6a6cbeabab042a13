package cap_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage/memory"
	"github.com/go-cap/cap/storage/sqlite"
	memtr "github.com/go-cap/cap/transport/memory"
)

type OrderCreated struct {
	ID    int     `json:"id"`
	Total float64 `json:"total"`
}

// A typed handler in a group, and a message published without a business
// transaction.
func ExampleSubscribe() {
	ctx := context.Background()
	bus, _ := cap.New(memory.New(), memtr.New(), cap.Options{Logger: quietLogger()})

	done := make(chan struct{})
	_ = cap.Subscribe(bus, "order.created", "billing", func(ctx context.Context, m cap.Msg[OrderCreated]) error {
		fmt.Printf("%s got order %d (%.2f) on %s\n", m.Group, m.Payload.ID, m.Payload.Total, m.Topic)
		close(done)
		return nil
	})
	_ = bus.Start(ctx)
	defer bus.Shutdown(ctx)

	_ = bus.Publish(ctx, "order.created", OrderCreated{ID: 42, Total: 9.5})
	<-done
	// Output: billing.v1 got order 42 (9.50) on order.created
}

// Publish stores the message in a transaction of its own and sends it at
// once.
func ExampleBus_Publish() {
	ctx := context.Background()
	bus, _ := cap.New(memory.New(), memtr.New(), cap.Options{Logger: quietLogger()})
	got := make(chan string)
	_ = cap.Subscribe(bus, "greeting", "", func(ctx context.Context, m cap.Msg[string]) error {
		got <- m.Payload
		return nil
	})
	_ = bus.Start(ctx)
	defer bus.Shutdown(ctx)

	if err := bus.Publish(ctx, "greeting", "hello"); err != nil {
		fmt.Println(err)
	}
	fmt.Println(<-got)
	// Output: hello
}

// PublishTx writes the message in the business transaction: it is sent if
// and only if the transaction commits. InTx commits and hands the message to
// the dispatcher at once.
func ExampleBus_PublishTx() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "cap-example")
	defer os.RemoveAll(dir)
	db, _ := sqlite.Open(filepath.Join(dir, "shop.db"))
	defer db.Close()
	_, _ = db.Exec(`CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)`)
	store, _ := sqlite.New(db, sqlite.Options{})
	bus, _ := cap.New(store, memtr.New(), cap.Options{Logger: quietLogger()})
	got := make(chan OrderCreated)
	_ = cap.Subscribe(bus, "order.created", "billing", func(ctx context.Context, m cap.Msg[OrderCreated]) error {
		got <- m.Payload
		return nil
	})
	_ = bus.Start(ctx)
	defer bus.Shutdown(ctx)

	err := bus.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders VALUES (7, 12.5)`); err != nil {
			return err
		}
		return bus.PublishTx(ctx, tx, "order.created", OrderCreated{ID: 7, Total: 12.5})
	})
	if err != nil {
		fmt.Println(err)
	}
	fmt.Printf("handled order %d\n", (<-got).ID)
	// Output: handled order 7
}

// A reply handler: its result goes to the topic the publisher named with
// WithCallback, correlated to the message it answers.
func ExampleSubscribeReply() {
	ctx := context.Background()
	bus, _ := cap.New(memory.New(), memtr.New(), cap.Options{Logger: quietLogger()})
	type Payment struct{ OrderID int }
	type Paid struct {
		OrderID int
		OK      bool
	}
	_ = cap.SubscribeReply(bus, "payment.requested", "payments", func(ctx context.Context, m cap.Msg[Payment]) (Paid, error) {
		return Paid{OrderID: m.Payload.OrderID, OK: true}, nil
	})
	done := make(chan struct{})
	_ = cap.Subscribe(bus, "payment.done", "orders", func(ctx context.Context, m cap.Msg[Paid]) error {
		fmt.Printf("order %d paid: %v (reply to %s, seq %s)\n", m.Payload.OrderID, m.Payload.OK,
			m.Headers["cap-corr-id"], m.Headers["cap-corr-seq"])
		close(done)
		return nil
	})
	_ = bus.Start(ctx)
	defer bus.Shutdown(ctx)

	_ = bus.Publish(ctx, "payment.requested", Payment{OrderID: 3}, cap.WithCallback("payment.done"), cap.WithID("1001"))
	<-done
	// Output: order 3 paid: true (reply to 1001, seq 1)
}

// Nodes lists the bus instances alive on the database, from the heartbeat
// each one records in the storage.
func ExampleBus_Nodes() {
	ctx := context.Background()
	store := memory.New() // one database shared by two instances
	api, _ := cap.New(store, memtr.New(), cap.Options{InstanceID: "api", Logger: quietLogger()})
	worker, _ := cap.New(store, memtr.New(), cap.Options{InstanceID: "worker", Logger: quietLogger()})
	_ = api.Start(ctx)
	defer api.Shutdown(ctx)
	_ = worker.Start(ctx)

	nodes, _ := api.Nodes(ctx)
	fmt.Println(len(nodes), "instances")
	_ = worker.Shutdown(ctx) // an instance that shuts down leaves the list
	nodes, _ = api.Nodes(ctx)
	for _, n := range nodes {
		fmt.Println(n.Name, "alive")
	}
	// Output:
	// 2 instances
	// api alive
}
