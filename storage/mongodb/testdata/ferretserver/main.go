// Command ferretserver runs FerretDB for the storage's tests in a process
// of its own, so that a test binary built with -race does not run FerretDB
// under the race detector (which makes it several times slower). It prints
// the server's MongoDB URI on a line of its own and runs until its
// standard input closes (the test binary ended, however it ended) or it
// is interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	handler := flag.String("handler", "sqlite", "FerretDB's handler: sqlite or postgresql")
	sqliteURL := flag.String("sqlite-url", "", "the SQLite handler's URL (file:DIR/)")
	pgURL := flag.String("postgresql-url", "", "the PostgreSQL handler's URL")
	listen := flag.String("listen", "127.0.0.1:0", "the TCP address to listen on")
	flag.Parse()
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: *listen},
		Handler:       *handler,
		SQLiteURL:     *sqliteURL,
		PostgreSQLURL: *pgURL,
		// Its PostgreSQL handler logs every refused insert (a duplicate
		// key, which the storage expects) as an error; clients get every
		// error anyway.
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 1})),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx) // it returns when ctx ends, always nil
	}()
	fmt.Println(f.MongoDBURI())
	<-done
}
