package sqlserver_test

import (
	"context"
	"database/sql"
	"log"

	_ "github.com/microsoft/go-mssqldb" // registers the "sqlserver" driver

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage/sqlserver"
	"github.com/go-cap/cap/transport/memory"
)

// A storage over database/sql with go-mssqldb: PublishTx takes the
// *sql.Tx of the business write, and the message is stored in
// [cap].[Published] in the same transaction. It has no Output line, so
// go test compiles it without running it: it needs a SQL Server.
func Example() {
	ctx := context.Background()
	db, err := sql.Open("sqlserver", "sqlserver://app:secret@127.0.0.1:1433?database=shop")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	store, err := sqlserver.New(db, sqlserver.Options{}) // schema "cap"
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

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO shop.orders (id) VALUES (@p1)`, 42); err != nil {
		log.Fatal(err)
	}
	if err := bus.PublishTx(ctx, tx, "order.created", map[string]int{"id": 42}); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
}
