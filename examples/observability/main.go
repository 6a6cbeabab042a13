// Command observability installs the OpenTelemetry SDK with stdout
// exporters, publishes one order in a transaction, handles it in two groups
// (one fails once and is retried) and prints the trace from the publisher's
// create span to the handlers' process spans, the metrics and the bus's
// health. A SQLite file and the in-memory broker: no server needed.
//
//	go run ./examples/observability
//
// A service installs its SDK the same way, with the exporter of its
// backend (OTLP, Prometheus ...) instead of stdout; the bus uses the global
// providers unless cap.Options names others.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage/sqlite"
	"github.com/go-cap/cap/transport/memory"
)

// OrderCreated is the event the shop publishes.
type OrderCreated struct {
	ID   int    `json:"id"`
	Item string `json:"item"`
}

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "observability:", err)
		os.Exit(1)
	}
}

// lockedWriter serialises the writes of the span and metric exporters, which
// write from the bus's goroutines and from run's.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func run(w io.Writer) error {
	out := &lockedWriter{w: w}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The SDK: spans written to out as they end, metrics read on demand.
	spans, err := stdouttrace.New(stdouttrace.WithWriter(out), stdouttrace.WithPrettyPrint())
	if err != nil {
		return err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer tp.Shutdown(context.Background())
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	dir, err := os.MkdirTemp("", "cap-observability")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := sqlite.Open(filepath.Join(dir, "shop.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := sqlite.New(db, sqlite.Options{})
	if err != nil {
		return err
	}
	broker := memory.New()
	defer broker.Close()
	bus, err := cap.New(store, broker, cap.Options{
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		RetryPolicy: retry.CAP{MaxRetries: 3, ImmediateAttempts: -1, Interval: 100 * time.Millisecond},
	})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(2)
	var failedOnce atomic.Bool
	for _, group := range []string{"billing", "shipping"} {
		err := cap.Subscribe(bus, "orders.created", group, func(ctx context.Context, m cap.Msg[OrderCreated]) error {
			if group == "shipping" && failedOnce.CompareAndSwap(false, true) {
				return errors.New("the warehouse is not answering") // recorded on the span; retried
			}
			wg.Done()
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := bus.Start(ctx); err != nil {
		return err
	}
	err = bus.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return bus.PublishTx(ctx, tx, "orders.created", OrderCreated{ID: 1, Item: "book"})
	})
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("the order was not handled in both groups: %w", ctx.Err())
	}

	health := bus.Health(ctx)
	metrics, err := stdoutmetric.New(stdoutmetric.WithWriter(out), stdoutmetric.WithPrettyPrint())
	if err != nil {
		return err
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return err
	}
	if err := metrics.Export(ctx, &rm); err != nil {
		return err
	}
	if err := bus.Shutdown(ctx); err != nil {
		return err
	}
	h, err := json.MarshalIndent(health, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "health: %s\n", h)
	return nil
}
