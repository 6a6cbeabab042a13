package main

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/go-cap/cap"
	memstore "github.com/go-cap/cap/storage/memory"
	"github.com/go-cap/cap/transport/memory"
)

// BenchmarkLifecycle measures one message's whole way in the process, on
// the in-memory storage and broker: publish in a transaction, dispatch,
// send, receive, store, handle and both outcomes. "none" runs with no
// OpenTelemetry SDK installed (the global providers), "sdk" with the SDK's
// tracer (every span sampled, kept in memory) and a meter with a manual
// reader, so the difference is the cost of the instrumentation. One op is
// 100 messages: allocs/op and B/op are per 100 messages, ns/msg per one.
func BenchmarkLifecycle(b *testing.B) {
	b.Run("none", func(b *testing.B) { benchLifecycle(b, cap.Options{}) })
	b.Run("sdk", func(b *testing.B) {
		rec := tracetest.NewInMemoryExporter()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(discardSpans{rec}))
		defer tp.Shutdown(context.Background())
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		defer mp.Shutdown(context.Background())
		benchLifecycle(b, cap.Options{TracerProvider: tp, MeterProvider: mp,
			Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})})
	})
}

func benchLifecycle(b *testing.B, o cap.Options) {
	const batch = 100
	store := memstore.New()
	tr := memory.New()
	defer tr.Close()
	wid := int64(1)
	o.WorkerID = &wid
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	bus, err := cap.New(store, tr, o)
	if err != nil {
		b.Fatal(err)
	}
	var handled atomic.Int64
	done := make(chan struct{}, 1)
	target := atomic.Int64{}
	if err := cap.Subscribe(bus, topic, "g", func(ctx context.Context, m cap.Msg[payload]) error {
		if handled.Add(1) == target.Load() {
			done <- struct{}{}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := bus.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer bus.Shutdown(ctx)
	p := payload{Seq: 1, Pad: padFor(256)}
	b.ReportAllocs()
	for b.Loop() {
		target.Add(batch)
		for range batch {
			if err := bus.InTx(ctx, func(ctx context.Context, tx *memstore.Tx) error {
				return bus.PublishTx(ctx, tx, topic, p)
			}); err != nil {
				b.Fatal(err)
			}
		}
		<-done
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/msg")
	b.ReportMetric(0, "ns/op")
}

// discardSpans drops the exported spans, so the benchmark's memory does not
// grow with b.N.
type discardSpans struct{ *tracetest.InMemoryExporter }

func (d discardSpans) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	d.Reset()
	return nil
}
