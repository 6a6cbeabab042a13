package sqlite_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/sqlite"
)

// A business write and its outbox row commit in one transaction; a
// dispatcher then claims the row.
func Example() {
	ctx := context.Background()
	db, err := sqlite.Open(":memory:") // a file name in production: "app.db"
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	store, err := sqlite.New(db, sqlite.Options{})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE orders (id INTEGER PRIMARY KEY)`); err != nil {
		log.Fatal(err)
	}

	tx, err := store.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id) VALUES (42)`); err != nil {
		log.Fatal(err)
	}
	row := &storage.Record{ID: 1, Version: "v1", Name: "order.created", Content: []byte(`{"Headers":{},"Value":{"id":42}}`)}
	if err := store.InsertPublishedTx(ctx, tx, []*storage.Record{row}); err != nil {
		log.Fatal(err)
	}
	if err := store.Commit(ctx, tx); err != nil {
		log.Fatal(err)
	}

	claimed, err := store.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range claimed {
		fmt.Println(r.Name, r.Status)
	}
	// Output: order.created Scheduled
}
