package rabbitmq

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
)

// benchTarget returns a transport and a topic routed to a durable queue
// with no consumer, so that every message is persisted as in production.
func benchTarget(b *testing.B) (*Transport, string) {
	tr := newTransport(b, Config{})
	topic := uniqueName("bench.")
	c, _ := subscribe(b, tr, topic)
	require.NoError(b, c.Close()) // the queue and binding stay
	return tr, topic
}

func benchMessages(topic string, n int) []*message.Message {
	body := append(append([]byte(`{"data":"`), bytes.Repeat([]byte("x"), 1024-11)...), `"}`...)
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = newMessage(topic, "")
		msgs[i].Body = body
	}
	return msgs
}

func reportRate(b *testing.B, n int) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msg/s")
}

// BenchmarkSendBatch sends 1 KB persistent messages in batches of 100 from
// one goroutine, waiting for all confirms of a batch before the next.
func BenchmarkSendBatch(b *testing.B) {
	tr, topic := benchTarget(b)
	const batch = 100
	msgs := benchMessages(topic, batch)
	ctx := context.Background()
	n := 0
	for b.Loop() {
		if errs := tr.SendBatch(ctx, msgs); errs != nil {
			b.Fatal(errs)
		}
		n += batch
	}
	reportRate(b, n)
}

// BenchmarkSendBatchParallel sends batches of 100 from 4 goroutines, which
// share the pool of confirm channels.
func BenchmarkSendBatchParallel(b *testing.B) {
	tr, topic := benchTarget(b)
	const batch = 100
	b.SetParallelism(2) // 2 × GOMAXPROCS senders
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		msgs := benchMessages(topic, batch)
		for pb.Next() {
			if errs := tr.SendBatch(context.Background(), msgs); errs != nil {
				b.Error(errs)
				return
			}
		}
	})
	reportRate(b, b.N*batch)
}

// BenchmarkSend sends one message at a time and waits for its confirm: the
// ceiling of a sender that does not batch.
func BenchmarkSend(b *testing.B) {
	tr, topic := benchTarget(b)
	m := benchMessages(topic, 1)[0]
	ctx := context.Background()
	n := 0
	for b.Loop() {
		if err := tr.Send(ctx, m); err != nil {
			b.Fatal(err)
		}
		n++
	}
	reportRate(b, n)
}
