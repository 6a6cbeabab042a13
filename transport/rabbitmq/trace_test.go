package rabbitmq

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage/memory"
)

// The trace of a message crosses RabbitMQ: two services, each with its own
// tracer, storage and connection; the consumer's spans belong to the trace
// the publisher started, through the traceparent header.
func TestTraceAcrossRabbitMQ(t *testing.T) {
	t.Parallel()
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	service := func(wid int64) (*cap.Bus[*memory.Tx], *tracetest.InMemoryExporter) {
		spans := tracetest.NewInMemoryExporter()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		bus, err := cap.New(memory.New(), newTransport(t, Config{}), cap.Options{
			WorkerID: &wid, PollInterval: 50 * time.Millisecond, Logger: testLogger(t),
			TracerProvider: tp, Propagator: prop,
		})
		require.NoError(t, err)
		return bus, spans
	}
	pub, pubSpans := service(1)
	sub, subSpans := service(2)
	topic := uniqueName("traced.")
	group := uniqueName("cap.queue.traced.")
	deleteQueueAtCleanup(t, group+".v1")
	got := make(chan trace.SpanContext, 1)
	require.NoError(t, cap.Subscribe(sub, topic, group, func(ctx context.Context, m cap.Msg[string]) error {
		got <- trace.SpanContextFromContext(ctx)
		return nil
	}))
	startBus(t, sub)
	startBus(t, pub)

	require.NoError(t, pub.InTx(context.Background(), func(ctx context.Context, tx *memory.Tx) error {
		return pub.PublishTx(ctx, tx, topic, "hello")
	}))
	var hc trace.SpanContext
	select {
	case hc = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the message was not handled")
	}
	var create tracetest.SpanStub
	for _, s := range pubSpans.GetSpans() {
		if s.Name == "create "+topic {
			create = s
		}
	}
	require.True(t, create.SpanContext.IsValid(), "the publisher recorded its create span")
	require.Equal(t, create.SpanContext.TraceID(), hc.TraceID(), "the handler runs in the publisher's trace")
	// The receive span ends with the ack, after the handler: a shut-down
	// subscriber has ended its spans.
	require.NoError(t, sub.Shutdown(context.Background()))
	var kinds []string
	for _, s := range subSpans.GetSpans() {
		require.Equal(t, create.SpanContext.TraceID(), s.SpanContext.TraceID(), "span %q", s.Name)
		require.Equal(t, create.SpanContext.SpanID(), s.Parent.SpanID(), "span %q", s.Name)
		kinds = append(kinds, s.Name)
	}
	require.Contains(t, kinds, "receive "+topic)
	for _, s := range subSpans.GetSpans() {
		if s.Name == "process "+topic {
			v := ""
			for _, kv := range s.Attributes {
				if kv.Key == "messaging.system" {
					v = kv.Value.AsString()
				}
			}
			require.Equal(t, "rabbitmq", v)
		}
	}
}
