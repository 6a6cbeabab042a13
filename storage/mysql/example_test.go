package mysql_test

import (
	"context"
	"database/sql"
	"log"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage/mysql"
	"github.com/go-cap/cap/transport/memory"
)

// A storage over database/sql: PublishTx takes a *sql.Tx, and the tables
// are CAP's `cap.published` and `cap.received`.
func ExampleNew() {
	ctx := context.Background()
	db, err := mysql.Open("root@tcp(127.0.0.1:3306)/test?parseTime=true&interpolateParams=true")
	if err != nil {
		log.Fatal(err) // names what the DSN lacks, such as parseTime=true
	}
	defer db.Close()
	store, err := mysql.New(db, mysql.Options{}) // prefix "cap"
	if err != nil {
		log.Fatal(err)
	}
	bus, err := cap.New(store, memory.New(), cap.Options{DefaultGroup: "shop"})
	if err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil { // runs Migrate
		log.Fatal(err)
	}
	defer bus.Shutdown(ctx)

	err = bus.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// ... business writes in tx ...
		return bus.PublishTx(ctx, tx, "order.created", map[string]int{"id": 42})
	})
	if err != nil {
		log.Fatal(err)
	}
}
