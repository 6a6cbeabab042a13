// Command dashboard runs a bus on SQLite and the in-memory broker with a few
// publishers and a handler that fails now and then, and serves its
// dashboard on localhost:
//
//	go run ./examples/dashboard -addr 127.0.0.1:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/dashboard"
	"github.com/go-cap/cap/storage/sqlite"
	memtr "github.com/go-cap/cap/transport/memory"
)

type order struct {
	ID    int     `json:"id"`
	Total float64 `json:"total"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address (keep it on loopback: the dashboard is anonymous here)")
	dbPath := flag.String("db", filepath.Join(os.TempDir(), "cap-dashboard-example.db"), "SQLite database file")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := run(ctx, ln, *dbPath, func(url string) { fmt.Println("dashboard:", url) }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run serves the dashboard on ln until ctx ends; ready gets its URL.
func run(ctx context.Context, ln net.Listener, dbPath string, ready func(url string)) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := sqlite.Open(dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := sqlite.New(db, sqlite.Options{})
	if err != nil {
		return err
	}
	bus, err := cap.New(store, memtr.New(), cap.Options{Logger: log, FailedRetryCount: 2,
		FailedRetryInterval: 2 * time.Second})
	if err != nil {
		return err
	}
	if err := cap.Subscribe(bus, "orders.created", "billing", func(ctx context.Context, m cap.Msg[order]) error {
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		if m.Payload.ID%7 == 0 {
			return errors.New("card declined")
		}
		return nil
	}); err != nil {
		return err
	}
	if err := cap.Subscribe(bus, "orders.created", "mailer", func(ctx context.Context, m cap.Msg[order]) error {
		return nil
	}); err != nil {
		return err
	}
	if err := bus.Start(ctx); err != nil {
		return err
	}
	defer bus.Shutdown(context.Background())

	for p := range 3 {
		go func() {
			tick := time.NewTicker(time.Duration(300+100*p) * time.Millisecond)
			defer tick.Stop()
			for n := p; ; n += 3 {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				_ = bus.Publish(ctx, "orders.created", order{ID: n, Total: float64(n) * 1.5})
			}
		}()
	}

	// Anonymous only because it listens on loopback; give Authorize a real
	// check anywhere else.
	h, err := dashboard.New(bus, dashboard.Options{PathBase: "/cap", AllowAnonymous: true})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/cap/", h)
	mux.Handle("/cap", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	ready("http://" + ln.Addr().String() + "/cap/")
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
