package transporttest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// randomWord returns "tt" and 16 random hex digits: one CAP word
// ([0-9a-zA-Z]+), unique across runs and concurrent test processes.
func randomWord() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "tt" + hex.EncodeToString(b[:])
}

// newTopic returns a fresh two-word topic. Its first word is unique, so
// brokers that map the first word to a stream (NATS) get a fresh one.
func newTopic() string { return randomWord() + ".event" }

// newGroup returns a fresh group name shaped like CAP's default group names.
func newGroup() string { return "cap.queue." + randomWord() + ".v1" }

// newID returns a random positive 63-bit decimal id, the shape of CAP's
// snowflake ids. Random ids never collide with an earlier run's, which
// matters to brokers that de-duplicate on the message id (NATS).
func newID() string {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	return n.String()
}

// newMessage returns a minimal message for topic with a small JSON body.
func newMessage(topic string) *message.Message {
	id := newID()
	return &message.Message{
		Headers: message.Headers{
			message.HeaderMessageID:   id,
			message.HeaderMessageName: topic,
			message.HeaderSentTime:    message.FormatSentTime(time.Now()),
		},
		Body: []byte(`{"id":` + id + `}`),
	}
}

// newMessages returns n messages for topic and the set of their ids mapped to
// the topic, as collect expects.
func newMessages(topic string, n int) ([]*message.Message, map[string]string) {
	msgs := make([]*message.Message, n)
	want := make(map[string]string, n)
	for i := range msgs {
		msgs[i] = newMessage(topic)
		want[msgs[i].ID()] = topic
	}
	return msgs, want
}

// fullMessage returns a message carrying every header CAP writes, non-ASCII
// values, a caller-defined header, CAP's null (an empty value) and a body
// holding all 256 byte values.
func fullMessage(topic string) *message.Message {
	body := make([]byte, 256)
	for i := range body {
		body[i] = byte(i)
	}
	return &message.Message{
		Headers: message.Headers{
			message.HeaderMessageID:           newID(),
			message.HeaderMessageName:         topic,
			message.HeaderType:                "Bestellung.Größe+Ærø, 注文 🚀",
			message.HeaderCorrelationID:       newID(),
			message.HeaderCorrelationSequence: "2",
			message.HeaderCallbackName:        "",
			message.HeaderExecutionInstanceID: "host-01",
			message.HeaderSentTime:            message.FormatSentTime(time.Now()),
			message.HeaderDelayTime:           "00:00:05",
			message.HeaderException:           "System.InvalidOperationException-->Größe ungültig: ünïcode ✗",
			message.HeaderTraceParent:         "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			message.HeaderTraceState:          "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
			message.HeaderBaggage:             "userId=alice,serverNode=DF%2028,isProduction=false",
			message.HeaderKafkaKey:            "order-42",
			"x-custom-header":                 "naïve café — ✓",
		},
		Body: body,
	}
}

// requireSameMessage checks that got carries every header of want with the
// same value and the same body. An empty header value (CAP's null) may come
// back empty or absent; headers a broker adds are allowed.
func requireSameMessage(t *testing.T, want, got *message.Message) {
	t.Helper()
	require.NotNil(t, got, "delivery has a nil message")
	for k, v := range want.Headers {
		g, ok := got.Headers[k]
		if v == "" {
			require.Empty(t, g, "header %q (CAP's null) must come back empty or absent", k)
			continue
		}
		require.True(t, ok, "header %q is missing; got headers %v", k, got.Headers)
		require.Equal(t, v, g, "header %q", k)
	}
	if len(want.Body) == 0 {
		require.Empty(t, got.Body, "body")
	} else {
		require.Equal(t, want.Body, got.Body, "body")
	}
}

// transport opens a transport through the harness and closes it when the
// subtest ends.
func (s *suite) transport(t *testing.T) transport.Transport {
	t.Helper()
	tr := s.h.New(t)
	require.NotNil(t, tr, "Harness.New returned nil")
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// subscribe opens a consumer and closes it when the subtest ends (before
// the transport, as cleanups run last-in first-out).
func (s *suite) subscribe(t *testing.T, tr transport.Transport, group string, topics ...string) transport.Consumer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	c, err := tr.Subscribe(ctx, group, topics)
	require.NoError(t, err, "Subscribe(%q, %q)", group, topics)
	require.NotNil(t, c, "Subscribe returned a nil consumer")
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// send sends each message with Send.
func (s *suite) send(t *testing.T, tr transport.Transport, msgs ...*message.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	for _, m := range msgs {
		require.NoError(t, tr.Send(ctx, m), "Send %s to %q", m.ID(), m.Name())
	}
}

// sendBatch sends msgs with SendBatch and requires every send to succeed.
func (s *suite) sendBatch(t *testing.T, tr transport.Transport, msgs []*message.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	errs := tr.SendBatch(ctx, msgs)
	if errs == nil {
		return
	}
	require.Len(t, errs, len(msgs), "SendBatch must return nil or one error per message")
	for i, err := range errs {
		require.NoError(t, err, "SendBatch message %d", i)
	}
}

// receive waits up to the timeout for one delivery.
func (s *suite) receive(t *testing.T, c transport.Consumer) transport.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	d, err := c.Receive(ctx)
	require.NoError(t, err, "Receive: no message within %v", s.timeout)
	require.NotNil(t, d, "Receive returned a nil delivery")
	require.NotNil(t, d.Message(), "delivery has a nil message")
	return d
}

func (s *suite) ack(t *testing.T, d transport.Delivery) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	require.NoError(t, d.Ack(ctx), "Ack %s", d.Message().ID())
}

func (s *suite) reject(t *testing.T, d transport.Delivery) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	require.NoError(t, d.Reject(ctx), "Reject %s", d.Message().ID())
}

// expectNone checks that none of the consumers receives a message within the
// quiet window, and that Receive then returns context.DeadlineExceeded.
func (s *suite) expectNone(t *testing.T, cs ...transport.Consumer) {
	t.Helper()
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), s.quiet)
			defer cancel()
			d, err := c.Receive(ctx)
			switch {
			case err == nil && d != nil && d.Message() != nil:
				errs[i] = fmt.Errorf("consumer %d received unexpected message %s on topic %q", i, d.Message().ID(), d.Topic())
				_ = d.Ack(context.Background())
			case err == nil:
				errs[i] = fmt.Errorf("consumer %d: Receive returned no delivery and no error", i)
			case !errors.Is(err, context.DeadlineExceeded):
				errs[i] = fmt.Errorf("consumer %d: Receive with an expired deadline returned %v, want an error wrapping context.DeadlineExceeded", i, err)
			}
		}()
	}
	s.wait(t, &wg, "Receive to return after its deadline")
	for _, err := range errs {
		require.NoError(t, err)
	}
}

// wait waits for wg, failing the subtest if it takes longer than the timeout
// plus the quiet window (a Receive that ignores its context).
func (s *suite) wait(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.timeout + s.quiet):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// received is one message a consumer got, reported to a collector.
type received struct {
	consumer int
	id       string
	topic    string
	err      error
}

// collector receives from consumers concurrently, acking each message, and
// checks what arrives against the ids it expects.
type collector struct {
	s        *suite
	want     map[string]string // id → topic
	n        int               // number of consumers
	got      chan received
	wg       sync.WaitGroup
	stopOnce sync.Once
	cancel   context.CancelFunc
}

// collect receives from the consumers until every id in want (id → topic)
// has arrived; see startCollect.
func (s *suite) collect(t *testing.T, want map[string]string, cs ...transport.Consumer) []int {
	t.Helper()
	return s.startCollect(t, want, cs...).finish(t)
}

// startCollect starts receiving from the consumers at once, so that
// messages sent afterwards reach receivers that are already blocked in
// Receive. finish waits for the result.
func (s *suite) startCollect(t *testing.T, want map[string]string, cs ...transport.Consumer) *collector {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	col := &collector{s: s, want: want, n: len(cs), got: make(chan received), cancel: cancel}
	t.Cleanup(func() { col.stop(t) })
	for i, c := range cs {
		col.wg.Add(1)
		go func() {
			defer col.wg.Done()
			for {
				d, err := c.Receive(ctx)
				r := received{consumer: i}
				switch {
				case err != nil:
					if ctx.Err() != nil {
						return
					}
					r.err = fmt.Errorf("Receive: %w", err)
				case d == nil || d.Message() == nil:
					r.err = errors.New("Receive returned no message and no error")
				default:
					r.id, r.topic = d.Message().ID(), d.Topic()
					actx, acancel := context.WithTimeout(context.Background(), s.timeout)
					if err := d.Ack(actx); err != nil {
						r.err = fmt.Errorf("Ack %s: %w", r.id, err)
					}
					acancel()
				}
				select {
				case col.got <- r:
				case <-ctx.Done():
					return
				}
				if r.err != nil {
					return
				}
			}
		}()
	}
	return col
}

// stop ends the receivers and waits for them, so that later checks on the
// consumers do not race with them.
func (col *collector) stop(t *testing.T) {
	col.stopOnce.Do(func() {
		col.cancel()
		col.s.wait(t, &col.wg, "receivers to return after their context was cancelled")
	})
}

// finish waits until every expected message has arrived, then stops the
// receivers. It fails on a message not expected, on a duplicate, on a
// Topic() that differs from the topic the message was sent to, and when no
// new message arrives within the timeout. It returns how many messages each
// consumer got.
func (col *collector) finish(t *testing.T) []int {
	t.Helper()
	defer col.stop(t)
	counts := make([]int, col.n)
	seen := make(map[string]bool, len(col.want))
	idle := time.NewTimer(col.s.timeout)
	defer idle.Stop()
	for len(seen) < len(col.want) {
		select {
		case r := <-col.got:
			require.NoError(t, r.err, "consumer %d", r.consumer)
			topic, ok := col.want[r.id]
			require.True(t, ok, "consumer %d received unexpected message %s on topic %q", r.consumer, r.id, r.topic)
			require.False(t, seen[r.id], "consumer %d received message %s (topic %q) a second time", r.consumer, r.id, r.topic)
			require.Equal(t, topic, r.topic, "Delivery.Topic() of message %s", r.id)
			seen[r.id] = true
			counts[r.consumer]++
			idle.Reset(col.s.timeout)
		case <-idle.C:
			t.Fatalf("received %d of %d messages; nothing new within %v; missing for example %s",
				len(seen), len(col.want), col.s.timeout, missing(col.want, seen, 5))
		}
	}
	return counts
}

// missing lists up to n ids of want not in seen, with their topics.
func missing(want map[string]string, seen map[string]bool, n int) string {
	var out []string
	for id, topic := range want {
		if !seen[id] {
			out = append(out, id+" ("+topic+")")
		}
	}
	sort.Strings(out)
	if len(out) > n {
		out = out[:n]
	}
	return strings.Join(out, ", ")
}

// waitErr waits up to the timeout for a blocked call to report its error.
func (s *suite) waitErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(s.timeout):
		t.Fatalf("%s did not return within %v", what, s.timeout)
		return nil
	}
}
