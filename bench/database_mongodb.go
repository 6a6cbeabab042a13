package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/go-cap/cap/storage/mongodb"
)

func init() {
	addServerFlag("mongodb", "CAP_TEST_MONGO", "mongodb://127.0.0.1:27017/",
		"MongoDB URI (the transactional scenarios need a replica set; burn-down runs on any server, FerretDB too)")
	registerStorage("mongodb", openMongoDB)
}

// openMongoDB creates a database of its own on the server, dropped by
// close, holding the outbox's collections and the business collections
// orders and plain. A business "statement" here names the collection to
// insert into; its arguments are the document's fields in the order of the
// SQL storages' columns (id, customer, total; id, body).
//
// Business transactions need a replica set: on a standalone server or
// FerretDB, publish-overhead, end-to-end, latency and soak fail at their
// first transaction with mongodb.ErrNoTransactions, and burn-down (which
// stores its rows without a transaction) runs.
func openMongoDB(ctx context.Context, cfg *config) (*database[*mongo.Session], error) {
	uri := cfg.server("mongodb")
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	client, err := mongo.Connect(options.Client().ApplyURI(uri).SetMaxPoolSize(uint64(min(cfg.writers+16, 60))))
	if err == nil {
		err = client.Ping(cctx, nil)
	}
	if err != nil {
		if client != nil {
			_ = client.Disconnect(context.Background())
		}
		return nil, fmt.Errorf("mongodb at %s (set -mongodb or CAP_TEST_MONGO): %w", redactURL(uri), err)
	}
	name := newName("capbench_")
	closeAll := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := client.Database(name).Drop(dctx); err != nil {
			fmt.Fprintf(os.Stderr, "bench: drop database %s: %v\n", name, err)
		}
		_ = client.Disconnect(dctx)
	}
	store, err := mongodb.New(ctx, client, mongodb.Options{Database: name})
	if err != nil {
		closeAll()
		return nil, err
	}
	if !store.TransactionsSupported() && cfg.scenario != "burn-down" {
		closeAll()
		return nil, fmt.Errorf("mongodb at %s: %s needs business transactions, which need a replica set: %w",
			redactURL(uri), cfg.scenario, mongodb.ErrNoTransactions)
	}
	bdb := client.Database(name)
	insert := func(ctx context.Context, coll string, args []any) error {
		var doc bson.D
		switch coll {
		case "orders":
			if len(args) != 3 {
				return errors.New("bench: an order is (id, customer, total)")
			}
			doc = bson.D{{Key: "_id", Value: args[0]}, {Key: "customer", Value: args[1]}, {Key: "total", Value: args[2]}}
		case "plain":
			if len(args) != 2 {
				return errors.New("bench: a plain row is (id, body)")
			}
			doc = bson.D{{Key: "_id", Value: args[0]}, {Key: "body", Value: args[1]}}
		default:
			return fmt.Errorf("bench: no business collection %q", coll)
		}
		_, err := bdb.Collection(coll).InsertOne(ctx, doc)
		return err
	}
	db := &database[*mongo.Session]{
		store: store,
		execTx: func(ctx context.Context, tx *mongo.Session, coll string, args ...any) error {
			return insert(mongo.NewSessionContext(ctx, tx), coll, args)
		},
		exec: func(ctx context.Context, coll string, args ...any) error {
			return insert(ctx, coll, args)
		},
		insertOrder: "orders",
		insertPlain: "plain",
		close:       closeAll,
	}
	if err := db.setup(ctx, nil); err != nil {
		closeAll()
		return nil, fmt.Errorf("mongodb: %w", err)
	}
	return db, nil
}
