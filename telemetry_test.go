package cap_test

import (
	"context"
	"database/sql"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/message"
)

// otelKit is an SDK tracer and meter that keep what they record in memory.
type otelKit struct {
	spans  *tracetest.InMemoryExporter
	reader *sdkmetric.ManualReader
	opts   cap.Options
}

func newOtelKit(t *testing.T) *otelKit {
	k := &otelKit{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(k.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(k.reader))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	k.opts = cap.Options{TracerProvider: tp, MeterProvider: mp,
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
	return k
}

// named returns the ended spans whose name starts with prefix.
func (k *otelKit) named(prefix string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range k.spans.GetSpans() {
		if len(s.Name) >= len(prefix) && s.Name[:len(prefix)] == prefix {
			out = append(out, s)
		}
	}
	return out
}

func attrOf(s tracetest.SpanStub, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func requireAttr(t *testing.T, s tracetest.SpanStub, key attribute.Key, want any) {
	t.Helper()
	v, ok := attrOf(s, key)
	require.True(t, ok, "span %q has no attribute %s (%v)", s.Name, key, s.Attributes)
	require.Equal(t, want, v.AsInterface(), "span %q attribute %s", s.Name, key)
}

// sum returns the value of a counter for the data points whose attributes
// include match.
func (k *otelKit) sum(t *testing.T, name string, match ...attribute.KeyValue) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, k.reader.Collect(context.Background(), &rm))
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if hasAll(p.Attributes, match) {
						total += p.Value
					}
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					if hasAll(p.Attributes, match) {
						total += p.Value
					}
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					if hasAll(p.Attributes, match) {
						total += int64(p.Count)
					}
				}
			}
		}
	}
	return total
}

func hasAll(set attribute.Set, kvs []attribute.KeyValue) bool {
	for _, kv := range kvs {
		v, ok := set.Value(kv.Key)
		if !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// TestTracePublishToHandlers publishes one message in a transaction and
// handles it in two groups, one of which fails once: one trace, with the
// create span the parent of the send, receive and process spans.
func TestTracePublishToHandlers(t *testing.T) {
	t.Parallel()
	k := newOtelKit(t)
	b := setup(t, k.opts)
	var failed atomic.Bool
	done := make(chan trace.SpanContext, 3)
	for _, g := range []string{"billing", "shipping"} {
		require.NoError(t, cap.Subscribe(b.bus, "orders.created", g, func(ctx context.Context, m cap.Msg[order]) error {
			if g == "shipping" && failed.CompareAndSwap(false, true) {
				return errors.New("warehouse down")
			}
			done <- trace.SpanContextFromContext(ctx)
			return nil
		}))
	}
	b.start(t)
	ctx := context.Background()
	require.NoError(t, b.bus.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return b.bus.PublishTx(ctx, tx, "orders.created", order{ID: 1, Item: "book"}, cap.WithCorrelation("conv-1", 0))
	}))
	handlerCtx := []trace.SpanContext{recv(t, done), recv(t, done)}
	eventually(t, 5*time.Second, func() bool {
		return len(k.named("process ")) == 3 && len(k.named("send ")) == 1 &&
			len(k.named("receive ")) == 2
	}, "spans: %v", k.spans.GetSpans())

	create := k.named("create ")
	require.Len(t, create, 1)
	c := create[0]
	require.Equal(t, "create orders.created", c.Name)
	require.Equal(t, trace.SpanKindProducer, c.SpanKind)
	requireAttr(t, c, "messaging.system", "memory")
	requireAttr(t, c, "messaging.destination.name", "orders.created")
	requireAttr(t, c, "messaging.operation.type", "create")
	requireAttr(t, c, "messaging.message.conversation_id", "conv-1")
	id, ok := attrOf(c, "messaging.message.id")
	require.True(t, ok)
	require.NotEmpty(t, id.AsString())
	size, _ := attrOf(c, "messaging.message.body.size")
	require.Positive(t, size.AsInt64())

	traceID := c.SpanContext.TraceID()
	for _, s := range append(append(k.named("send "), k.named("receive ")...), k.named("process ")...) {
		require.Equal(t, traceID, s.SpanContext.TraceID(), "span %q is in the publisher's trace", s.Name)
		require.Equal(t, c.SpanContext.SpanID(), s.Parent.SpanID(), "span %q is a child of the create span", s.Name)
		require.True(t, s.Parent.IsRemote(), "span %q continues the context from the message's headers", s.Name)
		requireAttr(t, s, "messaging.message.id", id.AsString())
	}
	send := k.named("send ")[0]
	require.Equal(t, trace.SpanKindClient, send.SpanKind)
	requireAttr(t, send, "messaging.operation.type", "send")

	groups := map[string]int{}
	var errored int
	for _, p := range k.named("process ") {
		require.Equal(t, trace.SpanKindConsumer, p.SpanKind)
		g, _ := attrOf(p, "messaging.consumer.group.name")
		groups[g.AsString()]++
		if p.Status.Code == codes.Error {
			errored++
			require.Equal(t, "shipping.v1", g.AsString())
			require.Contains(t, p.Status.Description, "warehouse down")
			require.NotEmpty(t, p.Events, "the error is recorded as an event")
			requireAttr(t, p, "cap.message.retries", int64(0))
		}
	}
	require.Equal(t, map[string]int{"billing.v1": 1, "shipping.v1": 2}, groups)
	require.Equal(t, 1, errored, "the failed attempt is recorded as an error")

	// The handlers' ctx holds their process span.
	spanIDs := map[trace.SpanID]bool{}
	for _, p := range k.named("process ") {
		spanIDs[p.SpanContext.SpanID()] = true
	}
	for _, hc := range handlerCtx {
		require.Equal(t, traceID, hc.TraceID())
		require.True(t, spanIDs[hc.SpanID()], "the handler's ctx carries its process span")
	}

	// The message carried the context in CAP's header.
	rs := received(t, b.store, "billing.v1")
	require.Len(t, rs, 1)
	m, err := message.DecodeContent(rs[0].Content)
	require.NoError(t, err)
	require.Equal(t, "00-"+traceID.String()+"-"+c.SpanContext.SpanID().String()+"-01", m.Headers["traceparent"])

	// Metrics.
	dest := attribute.String("messaging.destination.name", "orders.created")
	require.EqualValues(t, 1, k.sum(t, "cap.messages.published", dest))
	require.EqualValues(t, 1, k.sum(t, "messaging.client.sent.messages", dest))
	require.EqualValues(t, 1, k.sum(t, "messaging.client.operation.duration", dest))
	require.EqualValues(t, 2, k.sum(t, "messaging.client.consumed.messages", dest))
	eventually(t, 5*time.Second, func() bool {
		return k.sum(t, "cap.messages.handled", attribute.String("cap.outcome", "succeeded")) == 2
	}, "two handled")
	require.EqualValues(t, 1, k.sum(t, "cap.messages.handled", attribute.String("cap.outcome", "succeeded"),
		attribute.String("messaging.consumer.group.name", "shipping.v1")))
	require.EqualValues(t, 3, k.sum(t, "messaging.process.duration", dest))
	require.EqualValues(t, 1, k.sum(t, "messaging.process.duration", dest, attribute.String("error.type", "handler_failed")))
}

// TestTraceContinuesForeignContext: a message whose traceparent another
// program wrote (a .NET CAP service) is handled in that trace.
func TestTraceContinuesForeignContext(t *testing.T) {
	t.Parallel()
	k := newOtelKit(t)
	b := setup(t, k.opts)
	got := make(chan trace.SpanContext, 1)
	require.NoError(t, cap.Subscribe(b.bus, "dotnet.event", "g", func(ctx context.Context, m cap.Msg[string]) error {
		got <- trace.SpanContextFromContext(ctx)
		return nil
	}))
	b.start(t)
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	require.NoError(t, b.tr.Send(context.Background(), &message.Message{Headers: message.Headers{
		message.HeaderMessageID: "9001", message.HeaderMessageName: "dotnet.event",
		"traceparent": "00-" + traceID + "-" + parentID + "-01", "baggage": "tenant=acme",
	}, Body: []byte(`"hello"`)}))
	sc := recv(t, got)
	require.Equal(t, traceID, sc.TraceID().String())
	eventually(t, 5*time.Second, func() bool { return len(k.named("process ")) == 1 }, "process span")
	p := k.named("process ")[0]
	require.Equal(t, parentID, p.Parent.SpanID().String())
	require.Equal(t, traceID, p.SpanContext.TraceID().String())
}

// TestNoProviderNoTraceHeaders: with no SDK installed nothing is written
// into the message's headers.
func TestNoProviderNoTraceHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t, cap.Options{Propagator: propagation.TraceContext{}})
	got := make(chan cap.Msg[string], 1)
	require.NoError(t, cap.Subscribe(b.bus, "plain", "g", func(ctx context.Context, m cap.Msg[string]) error {
		got <- m
		return nil
	}))
	b.start(t)
	require.NoError(t, b.bus.Publish(context.Background(), "plain", "x"))
	m := recv(t, got)
	require.NotContains(t, m.Headers, "traceparent")
}
