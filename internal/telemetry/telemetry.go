// Package telemetry holds the bus's OpenTelemetry instrumentation: the spans
// of a message's life (create in the publisher's transaction, send to the
// broker, receive into the Received table, process by a handler), the trace
// context carried in the message's headers, and the metrics.
//
// It uses the OpenTelemetry API only. With nothing installed (the global
// providers before an application sets an SDK, or no-op providers) the hot
// path does no span work and allocates nothing: spans start only when the
// tracer provider in force is a real one, and the metric attributes are
// built once per destination and group.
package telemetry

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
)

// ScopeName is the instrumentation scope of the bus's tracer and meter.
const ScopeName = "github.com/go-cap/cap"

// Attribute keys: OpenTelemetry's messaging semantic conventions where they
// have one, cap.-prefixed where they do not.
const (
	KeySystem         = attribute.Key("messaging.system")
	KeyDestination    = attribute.Key("messaging.destination.name")
	KeyGroup          = attribute.Key("messaging.consumer.group.name")
	KeyMessageID      = attribute.Key("messaging.message.id")
	KeyConversationID = attribute.Key("messaging.message.conversation_id")
	KeyBodySize       = attribute.Key("messaging.message.body.size")
	KeyOperationName  = attribute.Key("messaging.operation.name")
	KeyOperationType  = attribute.Key("messaging.operation.type")
	KeyBatchCount     = attribute.Key("messaging.batch.message_count")
	KeyClientID       = attribute.Key("messaging.client.id")
	KeyErrorType      = attribute.Key("error.type")
	KeyRetries        = attribute.Key("cap.message.retries")
	KeyOutcome        = attribute.Key("cap.outcome")
	KeyTable          = attribute.Key("cap.table")
)

// Outcomes of a handled message (the cap.outcome attribute).
const (
	OutcomeSucceeded = "succeeded"
	OutcomeRetry     = "retry"  // failed; tried again later
	OutcomeFailed    = "failed" // failed for good
)

// Config chooses the providers; nil ones are the global ones, looked up at
// each use, so that an SDK installed after the bus was made is used.
type Config struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Propagator     propagation.TextMapPropagator
	// System is messaging.system: the broker ("rabbitmq", "kafka" ...).
	System string
	// ClientID is messaging.client.id: the instance.
	ClientID string
}

// Telemetry is the instrumentation of one bus. Its methods are safe for
// concurrent use; a nil *Telemetry does nothing.
type Telemetry struct {
	cfg    Config
	fixed  *tracerState // when Config.TracerProvider is set
	global atomic.Pointer[tracerState]

	published metric.Int64Counter
	sent      metric.Int64Counter
	sendDur   metric.Float64Histogram
	consumed  metric.Int64Counter
	handled   metric.Int64Counter
	procDur   metric.Float64Histogram
	retries   metric.Int64Counter

	// Counters are the same events as the instruments, kept in memory for
	// the dashboard.
	Counters Counters

	mu    sync.RWMutex
	dests map[string]*destAttrs           // by destination
	subs  map[string]map[string]*subAttrs // by group, then destination
}

// tracerState is a tracer provider with its tracer, and whether spans are
// worth starting (false for the global provider with nothing installed and
// for no-op providers).
type tracerState struct {
	tp     trace.TracerProvider
	tracer trace.Tracer
	on     bool
	// comparable: the provider can be compared with ==, so the state can be
	// cached for the global provider.
	comparable bool
}

func newTracerState(tp trace.TracerProvider) *tracerState {
	t := reflect.TypeOf(tp)
	st := &tracerState{tp: tp, tracer: tp.Tracer(ScopeName), comparable: t.Comparable()}
	switch tp.(type) {
	case tracenoop.TracerProvider, *tracenoop.TracerProvider:
	default:
		// The global provider before an SDK is set delegates to nothing.
		st.on = t.String() != "*global.tracerProvider"
	}
	return st
}

// New returns the instrumentation of a bus. It fails only when the meter
// refuses an instrument.
func New(cfg Config) (*Telemetry, error) {
	t := &Telemetry{cfg: cfg, dests: map[string]*destAttrs{}, subs: map[string]map[string]*subAttrs{}}
	if cfg.TracerProvider != nil {
		t.fixed = newTracerState(cfg.TracerProvider)
	}
	mp := cfg.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(ScopeName)
	var err error
	counter := func(name, unit, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var c metric.Int64Counter
		c, err = m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		return c
	}
	histogram := func(name, desc string) metric.Float64Histogram {
		if err != nil {
			return nil
		}
		var h metric.Float64Histogram
		h, err = m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
		return h
	}
	t.published = counter("cap.messages.published", "{message}", "Messages stored in the Published table by a publish")
	t.sent = counter("messaging.client.sent.messages", "{message}", "Messages the broker accepted, or refused (error.type)")
	t.sendDur = histogram("messaging.client.operation.duration", "Duration of a send to the broker, until it confirmed")
	t.consumed = counter("messaging.client.consumed.messages", "{message}", "Messages received from the broker and stored")
	t.handled = counter("cap.messages.handled", "{message}", "Handler outcomes (cap.outcome: succeeded, retry, failed)")
	t.procDur = histogram("messaging.process.duration", "Duration of one handler run")
	t.retries = counter("cap.messages.retries", "{retry}", "Sends and handler runs scheduled again after a failure")
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Meter returns the meter of the bus's instruments.
func (t *Telemetry) Meter() metric.Meter {
	mp := t.cfg.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return mp.Meter(ScopeName)
}

// tracer returns the tracer in force, or nil when spans are not worth
// starting.
func (t *Telemetry) tracer() trace.Tracer {
	if t == nil {
		return nil
	}
	st := t.fixed
	if st == nil {
		tp := otel.GetTracerProvider()
		st = t.global.Load()
		if st == nil || !st.comparable || st.tp != tp {
			st = newTracerState(tp)
			t.global.Store(st)
		}
	}
	if !st.on {
		return nil
	}
	return st.tracer
}

func (t *Telemetry) propagator() propagation.TextMapPropagator {
	if t.cfg.Propagator != nil {
		return t.cfg.Propagator
	}
	return otel.GetTextMapPropagator()
}

// Tracing reports whether spans are recorded now.
func (t *Telemetry) Tracing() bool { return t.tracer() != nil }

// Inject writes ctx's trace context into h (traceparent, tracestate,
// baggage, as the propagator writes them).
func (t *Telemetry) Inject(ctx context.Context, h message.Headers) {
	t.propagator().Inject(ctx, propagation.MapCarrier(h))
}

// Extract returns ctx with the trace context of h, when it carries one.
func (t *Telemetry) Extract(ctx context.Context, h message.Headers) context.Context {
	if t == nil {
		return ctx
	}
	return t.propagator().Extract(ctx, propagation.MapCarrier(h))
}

// Span is one span of a message, or nothing when tracing is off. The zero
// value does nothing.
type Span struct{ s trace.Span }

// End ends the span, recording err as its error when not nil.
func (s Span) End(err error) {
	if s.s == nil {
		return
	}
	if err != nil {
		s.s.RecordError(err)
		s.s.SetStatus(codes.Error, err.Error())
		s.s.SetAttributes(KeyErrorType.String(errorType(err)))
	}
	s.s.End()
}

// SetAttributes adds attributes to the span.
func (s Span) SetAttributes(kv ...attribute.KeyValue) {
	if s.s != nil {
		s.s.SetAttributes(kv...)
	}
}

// Recording reports whether the span records.
func (s Span) Recording() bool { return s.s != nil && s.s.IsRecording() }

// errorType is error.type: the Go type of the innermost error.
func errorType(err error) string {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			break
		}
		next := u.Unwrap()
		if next == nil {
			break
		}
		err = next
	}
	return strings.TrimPrefix(reflect.TypeOf(err).String(), "*")
}

func (t *Telemetry) msgAttrs(dest string, h message.Headers, bodySize int) []attribute.KeyValue {
	kv := make([]attribute.KeyValue, 0, 8)
	if t.cfg.System != "" {
		kv = append(kv, KeySystem.String(t.cfg.System))
	}
	kv = append(kv, KeyDestination.String(dest), KeyMessageID.String(h[message.HeaderMessageID]),
		KeyBodySize.Int(bodySize))
	if c := h[message.HeaderCorrelationID]; c != "" {
		kv = append(kv, KeyConversationID.String(c))
	}
	if t.cfg.ClientID != "" {
		kv = append(kv, KeyClientID.String(t.cfg.ClientID))
	}
	return kv
}

// StartCreate starts the span of a message created in the publisher's
// transaction and writes its trace context into h, so that the send and the
// consumers' spans, however much later, belong to the publisher's trace.
func (t *Telemetry) StartCreate(ctx context.Context, dest string, h message.Headers, bodySize int) Span {
	tr := t.tracer()
	if tr == nil {
		return Span{}
	}
	kv := append(t.msgAttrs(dest, h, bodySize), KeyOperationName.String("publish"), KeyOperationType.String("create"))
	sctx, s := tr.Start(ctx, "create "+dest, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(kv...))
	t.Inject(sctx, h)
	return Span{s}
}

// StartSend starts the span of one message's send to the broker, a child of
// the creation context its headers carry.
func (t *Telemetry) StartSend(ctx context.Context, dest string, h message.Headers, bodySize, retries int) Span {
	tr := t.tracer()
	if tr == nil {
		return Span{}
	}
	ctx = t.Extract(ctx, h)
	kv := append(t.msgAttrs(dest, h, bodySize), KeyOperationName.String("send"), KeyOperationType.String("send"))
	if retries > 0 {
		kv = append(kv, KeyRetries.Int(retries))
	}
	_, s := tr.Start(ctx, "send "+dest, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(kv...))
	return Span{s}
}

// StartReceive starts the span of a delivery stored into the Received
// table, a child of the creation context its headers carry.
func (t *Telemetry) StartReceive(ctx context.Context, dest, group string, h message.Headers, bodySize int) Span {
	tr := t.tracer()
	if tr == nil {
		return Span{}
	}
	ctx = t.Extract(ctx, h)
	kv := append(t.msgAttrs(dest, h, bodySize), KeyGroup.String(group), KeyOperationName.String("receive"),
		KeyOperationType.String("receive"))
	_, s := tr.Start(ctx, "receive "+dest, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(kv...))
	return Span{s}
}

// StartProcess starts the span of one handler run, a child of the creation
// context the message's headers carry, and returns the handler's context,
// which holds the span. Without tracing it returns ctx with the remote
// context, when the message carries one.
func (t *Telemetry) StartProcess(ctx context.Context, dest, group string, h message.Headers, bodySize, retries int) (context.Context, Span) {
	tr := t.tracer()
	if tr == nil {
		return ctx, Span{}
	}
	ctx = t.Extract(ctx, h)
	kv := append(t.msgAttrs(dest, h, bodySize), KeyGroup.String(group), KeyOperationName.String("process"),
		KeyOperationType.String("process"), KeyRetries.Int(retries))
	ctx, s := tr.Start(ctx, "process "+dest, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(kv...))
	return ctx, Span{s}
}

// destAttrs are the prepared measurement options of one destination.
type destAttrs struct {
	add, addErr []metric.AddOption
	rec, recErr []metric.RecordOption
	retry       []metric.AddOption
}

// subAttrs are the prepared measurement options of one destination in one
// group.
type subAttrs struct {
	consumed                 []metric.AddOption
	succeeded, retry, failed []metric.AddOption
	procOK, procErr          []metric.RecordOption
	retries                  []metric.AddOption
}

func (t *Telemetry) base() []attribute.KeyValue {
	if t.cfg.System == "" {
		return nil
	}
	return []attribute.KeyValue{KeySystem.String(t.cfg.System)}
}

func (t *Telemetry) dest(name string) *destAttrs {
	t.mu.RLock()
	d := t.dests[name]
	t.mu.RUnlock()
	if d != nil {
		return d
	}
	kv := append(t.base(), KeyDestination.String(name))
	ok := metric.WithAttributeSet(attribute.NewSet(append(kv, KeyOperationName.String("send"))...))
	bad := metric.WithAttributeSet(attribute.NewSet(append(kv, KeyOperationName.String("send"),
		KeyErrorType.String("send_failed"))...))
	plain := metric.WithAttributeSet(attribute.NewSet(kv...))
	retry := metric.WithAttributeSet(attribute.NewSet(append(kv, KeyTable.String("published"))...))
	d = &destAttrs{add: []metric.AddOption{plain}, addErr: []metric.AddOption{bad},
		rec: []metric.RecordOption{ok}, recErr: []metric.RecordOption{bad}, retry: []metric.AddOption{retry}}
	t.mu.Lock()
	if o := t.dests[name]; o != nil {
		d = o
	} else {
		t.dests[name] = d
	}
	t.mu.Unlock()
	return d
}

func (t *Telemetry) sub(group, name string) *subAttrs {
	t.mu.RLock()
	s := t.subs[group][name]
	t.mu.RUnlock()
	if s != nil {
		return s
	}
	kv := append(t.base(), KeyDestination.String(name), KeyGroup.String(group))
	set := func(extra ...attribute.KeyValue) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(append(append([]attribute.KeyValue(nil), kv...), extra...)...))
	}
	s = &subAttrs{
		consumed:  []metric.AddOption{set(KeyOperationName.String("receive"))},
		succeeded: []metric.AddOption{set(KeyOutcome.String(OutcomeSucceeded))},
		retry:     []metric.AddOption{set(KeyOutcome.String(OutcomeRetry))},
		failed:    []metric.AddOption{set(KeyOutcome.String(OutcomeFailed))},
		procOK:    []metric.RecordOption{set(KeyOperationName.String("process"))},
		procErr:   []metric.RecordOption{set(KeyOperationName.String("process"), KeyErrorType.String("handler_failed"))},
		retries:   []metric.AddOption{set(KeyTable.String("received"))},
	}
	t.mu.Lock()
	if t.subs[group] == nil {
		t.subs[group] = map[string]*subAttrs{}
	}
	if o := t.subs[group][name]; o != nil {
		s = o
	} else {
		t.subs[group][name] = s
	}
	t.mu.Unlock()
	return s
}

// Counters are running totals since the bus was created, updated by the
// same calls that feed the OpenTelemetry instruments.
type Counters struct {
	Published        atomic.Int64 // messages stored by publishes
	Sent             atomic.Int64 // sends that succeeded
	SendFailed       atomic.Int64 // sends that failed
	Consumed         atomic.Int64 // deliveries stored in the Received table
	Processed        atomic.Int64 // handler runs
	ProcessedNanos   atomic.Int64 // total time of the handler runs
	HandledSucceeded atomic.Int64
	HandledRetry     atomic.Int64
	HandledFailed    atomic.Int64
}

// Published counts n messages stored by a publish to dest.
func (t *Telemetry) Published(ctx context.Context, dest string, n int) {
	if t == nil {
		return
	}
	t.Counters.Published.Add(int64(n))
	t.published.Add(ctx, int64(n), t.dest(dest).add...)
}

// Sent records one message's send to dest, which took d, and failed when
// failed.
func (t *Telemetry) Sent(ctx context.Context, dest string, d time.Duration, failed bool) {
	if t == nil {
		return
	}
	a := t.dest(dest)
	if failed {
		t.Counters.SendFailed.Add(1)
		t.sent.Add(ctx, 1, a.addErr...)
		t.sendDur.Record(ctx, d.Seconds(), a.recErr...)
		return
	}
	t.Counters.Sent.Add(1)
	t.sent.Add(ctx, 1, a.add...)
	t.sendDur.Record(ctx, d.Seconds(), a.rec...)
}

// SendRetry counts a send of dest scheduled again.
func (t *Telemetry) SendRetry(ctx context.Context, dest string) {
	if t == nil {
		return
	}
	t.retries.Add(ctx, 1, t.dest(dest).retry...)
}

// Consumed counts a delivery of dest to group stored in the Received table.
func (t *Telemetry) Consumed(ctx context.Context, group, dest string) {
	if t == nil {
		return
	}
	t.Counters.Consumed.Add(1)
	t.consumed.Add(ctx, 1, t.sub(group, dest).consumed...)
}

// Processed records one handler run of dest in group that took d.
func (t *Telemetry) Processed(ctx context.Context, group, dest string, d time.Duration, failed bool) {
	if t == nil {
		return
	}
	t.Counters.Processed.Add(1)
	t.Counters.ProcessedNanos.Add(int64(d))
	s := t.sub(group, dest)
	if failed {
		t.procDur.Record(ctx, d.Seconds(), s.procErr...)
		return
	}
	t.procDur.Record(ctx, d.Seconds(), s.procOK...)
}

// Handled counts the outcome of a message of dest in group: succeeded, to
// be retried (also counted as a retry), or failed for good.
func (t *Telemetry) Handled(ctx context.Context, group, dest, outcome string) {
	if t == nil {
		return
	}
	s := t.sub(group, dest)
	switch outcome {
	case OutcomeSucceeded:
		t.Counters.HandledSucceeded.Add(1)
		t.handled.Add(ctx, 1, s.succeeded...)
	case OutcomeRetry:
		t.Counters.HandledRetry.Add(1)
		t.handled.Add(ctx, 1, s.retry...)
		t.retries.Add(ctx, 1, s.retries...)
	default:
		t.Counters.HandledFailed.Add(1)
		t.handled.Add(ctx, 1, s.failed...)
	}
}

// RegisterBacklog registers the outbox gauges, read with read at each
// collection: cap.outbox.due (rows due and not yet sent or handled),
// cap.outbox.oldest_due.age (seconds since the oldest of them was due) and
// cap.outbox.failed (rows Failed for good), by cap.table and, for the
// Received table, messaging.consumer.group.name. The returned function
// unregisters them.
func (t *Telemetry) RegisterBacklog(read func(ctx context.Context, tbl storage.Table) ([]storage.Backlog, error)) (func() error, error) {
	m := t.Meter()
	due, err := m.Int64ObservableGauge("cap.outbox.due", metric.WithUnit("{message}"),
		metric.WithDescription("Rows due and not yet sent (Published) or handled (Received)"))
	if err != nil {
		return nil, err
	}
	age, err := m.Float64ObservableGauge("cap.outbox.oldest_due.age", metric.WithUnit("s"),
		metric.WithDescription("How long the oldest due row has been due"))
	if err != nil {
		return nil, err
	}
	failed, err := m.Int64ObservableGauge("cap.outbox.failed", metric.WithUnit("{message}"),
		metric.WithDescription("Rows Failed for good, kept until they expire"))
	if err != nil {
		return nil, err
	}
	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		for _, tbl := range []storage.Table{storage.Published, storage.Received} {
			bs, err := read(ctx, tbl)
			if err != nil {
				return err
			}
			for _, b := range bs {
				kv := []attribute.KeyValue{KeyTable.String(tbl.String())}
				if tbl == storage.Received {
					kv = append(kv, KeyGroup.String(b.Group))
				}
				opt := metric.WithAttributes(kv...)
				o.ObserveInt64(due, b.Due, opt)
				o.ObserveInt64(failed, b.Failed, opt)
				var a float64
				if b.Due > 0 {
					a = max(b.Now.Sub(b.OldestDue).Seconds(), 0)
				}
				o.ObserveFloat64(age, a, opt)
			}
			if len(bs) == 0 && tbl == storage.Published {
				opt := metric.WithAttributes(KeyTable.String(tbl.String()))
				o.ObserveInt64(due, 0, opt)
				o.ObserveInt64(failed, 0, opt)
				o.ObserveFloat64(age, 0, opt)
			}
		}
		return nil
	}, due, age, failed)
	if err != nil {
		return nil, err
	}
	return reg.Unregister, nil
}
