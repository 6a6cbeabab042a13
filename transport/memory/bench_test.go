package memory_test

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport/memory"
)

func benchMessage(i int) *message.Message {
	return &message.Message{
		Headers: message.Headers{
			message.HeaderMessageID:   strconv.Itoa(i),
			message.HeaderMessageName: "bench.topic",
			message.HeaderSentTime:    "01/02/2026 15:04:05",
			message.HeaderType:        "Bench",
		},
		Body: make([]byte, 256),
	}
}

// BenchmarkSendReceiveAck measures one sender calling Send while one
// consumer receives and acks, concurrently.
func BenchmarkSendReceiveAck(b *testing.B) {
	benchmarkThroughput(b, 1, 1)
}

// BenchmarkSendBatchReceiveAck measures batches of 100 sent to a group with
// 4 competing consumers.
func BenchmarkSendBatchReceiveAck(b *testing.B) {
	benchmarkThroughput(b, 100, 4)
}

func benchmarkThroughput(b *testing.B, batch, consumers int) {
	ctx := context.Background()
	tr := memory.New()
	defer tr.Close()
	msgs := make([]*message.Message, batch)
	for i := range msgs {
		msgs[i] = benchMessage(i)
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	remaining := b.N
	take := func() bool { // claims one message to receive
		mu.Lock()
		defer mu.Unlock()
		remaining--
		return remaining >= 0
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range consumers {
		c, err := tr.Subscribe(ctx, "bench", []string{"bench.topic"})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for take() {
				d, err := c.Receive(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				if err := d.Ack(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	for sent := 0; sent < b.N; {
		n := min(batch, b.N-sent)
		if batch == 1 {
			if err := tr.Send(ctx, msgs[0]); err != nil {
				b.Fatal(err)
			}
		} else if errs := tr.SendBatch(ctx, msgs[:n]); errs != nil {
			b.Fatal(errs)
		}
		sent += n
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
