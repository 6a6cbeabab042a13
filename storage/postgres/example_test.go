package postgres_test

import (
	"context"
	"database/sql"
	"log"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage/postgres"
	"github.com/go-cap/cap/transport/memory"
)

// A storage over a pgx pool: PublishTx takes a pgx.Tx, and a plain
// tx.Commit is dispatched at once through NOTIFY.
func ExampleNew() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := postgres.New(pool, postgres.Options{}) // schema "cap"
	if err != nil {
		log.Fatal(err)
	}
	bus, err := cap.New(store, memory.New(), cap.Options{DefaultGroup: "shop"})
	if err != nil {
		log.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer bus.Shutdown(ctx)

	tx, err := pool.Begin(ctx) // a pgx.Tx
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// ... business writes in tx ...
	if err := bus.PublishTx(ctx, tx, "order.created", map[string]int{"id": 42}); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}
}

// A storage over database/sql with pgx's stdlib driver. Behind PgBouncer in
// transaction mode, LISTEN does not work: point the listener at PostgreSQL
// itself, or turn notifications off and let the bus poll.
func ExampleNewSQL() {
	db, err := sql.Open("pgx", "postgres://app@pgbouncer:6432/shop")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	store, err := postgres.NewSQL(db, postgres.Options{
		ListenConnString: "postgres://app@postgres:5432/shop",
		// or: DisableNotify: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	bus, err := cap.New(store, memory.New(), cap.Options{DefaultGroup: "shop"})
	if err != nil {
		log.Fatal(err)
	}
	_ = bus // PublishTx(ctx, tx *sql.Tx, ...)
}
