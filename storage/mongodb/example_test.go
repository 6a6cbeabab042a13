package mongodb_test

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/mongodb"
)

// Publishing in the caller's transaction: the order and its outbox row
// commit together. It needs a replica set; on a server without
// transactions InsertPublishedTx (and a bus's PublishTx) fails with
// ErrNoTransactions.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := mongo.Connect(options.Client().ApplyURI(serverURI))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = client.Disconnect(ctx) }()
	store, err := mongodb.New(ctx, client, mongodb.Options{Database: "cap_example"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = client.Database("cap_example").Drop(ctx) }()
	if err := store.Migrate(ctx); err != nil {
		fmt.Println(err)
		return
	}
	sess, err := client.StartSession()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sess.EndSession(ctx)
	orders := client.Database("cap_example").Collection("orders")
	_, err = sess.WithTransaction(ctx, func(ctx context.Context) (any, error) {
		if _, err := orders.InsertOne(ctx, bson.M{"_id": 1}); err != nil {
			return nil, err
		}
		// With a bus: bus.PublishTx(ctx, sess, "orders.created", order).
		return nil, store.InsertPublishedTx(ctx, sess, []*storage.Record{{ID: 1, Version: "v1", Name: "orders.created", Content: []byte(`{}`)}})
	})
	fmt.Println("transactions:", store.TransactionsSupported(), "committed:", err == nil)
}
