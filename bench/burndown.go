package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
)

// burnDown: the baseline sends N messages straight to the broker with
// asynchronous confirms; then N rows are stored with the bus stopped, the
// bus starts, and the library's figure is N over the time from Start to the
// broker's last confirm.
func burnDown[TTx any](ctx context.Context, cfg *config, out *report, db *database[TTx], br *broker) (result, error) {
	n := cfg.n
	sinkQueue, err := br.sink(ctx, "sink", topic)
	if err != nil {
		return result{}, err
	}
	out.linef("n=%d", n)

	msgs, err := capMessages(n, cfg.size)
	if err != nil {
		return result{}, err
	}
	start, cpu := time.Now(), readCPU()
	if err := br.rawSend(ctx, msgs); err != nil {
		return result{}, fmt.Errorf("baseline: %w", err)
	}
	baseElapsed := time.Since(start)
	base := rate(int64(n), baseElapsed)
	out.linef("baseline (raw sends, asynchronous confirms): %d in %s = %s msg/s", n, baseElapsed.Round(time.Millisecond), num(base))
	baseCPU := readCPU().since(cpu)
	out.linef("  %s", baseCPU.format(baseElapsed))
	out.linef("  %s", baseCPU.perMessage(int64(n), "message"))
	msgs = nil
	if err := br.purge(ctx, sinkQueue, topic); err != nil {
		return result{}, err
	}

	sent := newCounting(br.tr)
	sent.target.Store(int64(n))
	bus, err := newBus(cfg, db, sent, br)
	if err != nil {
		return result{}, err
	}
	pad := padFor(cfg.size)
	start = time.Now()
	const chunk = 500
	batch := make([]cap.Outgoing, 0, chunk)
	for i := 0; i < n; i += chunk {
		batch = batch[:0]
		for j := i; j < min(i+chunk, n); j++ {
			batch = append(batch, cap.Outgoing{Topic: topic, Payload: payload{Seq: int64(j), Pad: pad}})
		}
		if err := bus.PublishBatch(ctx, batch...); err != nil {
			return result{}, err
		}
	}
	out.linef("stored %d rows with the bus stopped in %s", n, time.Since(start).Round(time.Millisecond))

	start, cpu = time.Now(), readCPU()
	if err := bus.Start(ctx); err != nil {
		return result{}, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = bus.Shutdown(sctx)
	}()
	limit := 5 * time.Minute
	select {
	case <-sent.reached:
	case <-ctx.Done():
		return result{}, ctx.Err()
	case <-time.After(limit):
		return result{}, fmt.Errorf("only %d of %d sent after %s", sent.sent.Load(), n, limit)
	}
	libElapsed := time.Unix(0, sent.at.Load()).Sub(start)
	libCPU := readCPU().since(cpu)
	lib := rate(int64(n), libElapsed)
	out.linef("library  (Start to the last confirm): %d in %s = %s msg/s", n, libElapsed.Round(time.Millisecond), num(lib))
	out.linef("  %s", libCPU.format(time.Since(start)))
	out.linef("  %s", libCPU.perMessage(int64(n), "message"))
	var marked int64
	ok := waitFor(ctx, time.Minute, func() bool {
		marked, err = db.succeeded(ctx, storage.Published)
		return err == nil && marked >= int64(n)
	})
	out.linef("all rows marked Succeeded %s after Start (done=%v, %d)", time.Since(start).Round(time.Millisecond), ok, marked)
	return result{value: lib, baseline: base, unit: "msg/s"}, br.purge(ctx, sinkQueue, topic)
}

// capMessages returns n messages with the headers and body size the bus
// would send.
func capMessages(n, size int) ([]*message.Message, error) {
	ids, err := message.NewIDGenerator(1)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(payload{Seq: 123456, Pad: padFor(size)})
	if err != nil {
		return nil, err
	}
	sentTime := message.FormatSentTime(time.Now())
	msgs := make([]*message.Message, n)
	for i := range msgs {
		id := strconv.FormatInt(ids.Next(), 10)
		msgs[i] = &message.Message{Headers: message.Headers{
			message.HeaderMessageID:           id,
			message.HeaderMessageName:         topic,
			message.HeaderType:                "payload",
			message.HeaderSentTime:            sentTime,
			message.HeaderCorrelationID:       id,
			message.HeaderCorrelationSequence: "0",
		}, Body: body}
	}
	return msgs, nil
}
