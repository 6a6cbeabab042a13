package main

// Benchmarks of the hot paths, run only with -bench:
//
//	go test -run '^$' -bench . -benchtime 2s ./bench
//
// The ones on PostgreSQL and RabbitMQ are skipped when the server cannot be
// reached (CAP_TEST_POSTGRES, CAP_TEST_RABBITMQ), and fail instead when
// CI=true.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/transport/memory"
)

var sizes = []int{256, 1024, 16384}

// BenchmarkPublishBuild measures what PublishTx does in the process for
// one message: ids, headers, payload serialization and the Content column,
// on a storage that discards the row.
func BenchmarkPublishBuild(b *testing.B) {
	for _, size := range sizes {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			tr := memory.New()
			defer tr.Close()
			wid := int64(1)
			bus, err := cap.New[discardTx](discard{}, tr, cap.Options{WorkerID: &wid})
			if err != nil {
				b.Fatal(err)
			}
			p := payload{Seq: 123456, Pad: padFor(size)}
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if err := bus.PublishTx(ctx, discardTx{}, topic, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkContent measures the Content column's encoding (publish,
// receive) and decoding (a claimed row on its way to the broker or to a
// handler).
func BenchmarkContent(b *testing.B) {
	for _, size := range sizes {
		msgs, err := capMessages(1, size)
		if err != nil {
			b.Fatal(err)
		}
		m := msgs[0]
		content, err := message.EncodeContent(m)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("encode/%d", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := message.EncodeContent(m); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("decode/%d", size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := message.DecodeContent(content); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSerializer measures the default JSON serializer on the payload
// the scenarios publish, both ways.
func BenchmarkSerializer(b *testing.B) {
	p := payload{Seq: 123456, Pad: padFor(1024)}
	body, err := json.Marshal(p)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := (message.JSON{}).Marshal(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		var out payload
		for b.Loop() {
			if err := (message.JSON{}).Unmarshal(body, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkClaimBatch claims due Published rows 100 at a time; an
// iteration is one claim. When the rows run out they are made due again,
// off the clock.
func BenchmarkClaimBatch(b *testing.B) {
	const rows, limit = 10000, 100
	forEachStorage(b, func(b *testing.B, s rowStore) {
		ctx := context.Background()
		ids := make([]int64, 0, rows)
		recs := make([]*storage.Record, 0, 500)
		gen, _ := message.NewIDGenerator(1)
		content, _ := json.Marshal(map[string]any{"Headers": map[string]string{}, "Value": padFor(1024)})
		for len(ids) < rows {
			recs = recs[:0]
			for range 500 {
				id := gen.Next()
				ids = append(ids, id)
				recs = append(recs, &storage.Record{ID: id, Version: "v1", Name: topic, Content: content})
			}
			if err := s.InsertPublished(ctx, recs); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		claimed := 0
		for b.Loop() {
			got, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: limit, Lease: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			claimed += len(got)
			if len(got) < limit {
				b.StopTimer()
				if err := s.Reschedule(ctx, storage.Published, ids, -time.Second); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		}
		b.ReportMetric(float64(claimed)/b.Elapsed().Seconds(), "rows/s")
	})
}

// BenchmarkInsertReceived stores 100 Received rows per iteration, one
// statement each or in one batch: what the consumer pays per burst of
// deliveries.
func BenchmarkInsertReceived(b *testing.B) {
	forEachStorage(b, func(b *testing.B, s rowStore) {
		ctx := context.Background()
		gen, _ := message.NewIDGenerator(2)
		content, _ := json.Marshal(map[string]any{"Headers": map[string]string{}, "Value": padFor(1024)})
		batch := func() []*storage.Record {
			recs := make([]*storage.Record, 100)
			for i := range recs {
				id := gen.Next()
				recs[i] = &storage.Record{ID: id, Version: "v1", Name: topic, Group: "g", MessageID: fmt.Sprint(id),
					Content: content, DueIn: time.Minute}
			}
			return recs
		}
		b.Run("single", func(b *testing.B) {
			for b.Loop() {
				for _, r := range batch() {
					if _, err := s.InsertReceived(ctx, r); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
		b.Run("batch", func(b *testing.B) {
			for b.Loop() {
				if _, err := s.InsertReceivedBatch(ctx, batch()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	})
}

// BenchmarkSendBatch sends 100 messages of 1 KiB per iteration through the
// transport, to a queue with no consumer, and waits for the broker's
// confirms.
func BenchmarkSendBatch(b *testing.B) {
	for _, kind := range transports {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			cfg := benchConfig()
			cfg.transport = kind
			br, err := openBroker(ctx, cfg)
			if err != nil {
				skipOrFail(b, err)
			}
			defer br.close()
			if _, err := br.sink(ctx, "sink", topic); err != nil {
				b.Fatal(err)
			}
			msgs, err := capMessages(100, 1024)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				if errs := br.tr.SendBatch(ctx, msgs); errs != nil {
					b.Fatal(errs)
				}
			}
			b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "msg/s")
			b.StopTimer()
			if err := br.purge(ctx, br.group("sink"), topic); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// forEachStorage runs fn on a fresh SQLite and PostgreSQL storage.
func forEachStorage(b *testing.B, fn func(b *testing.B, s rowStore)) {
	ctx := context.Background()
	b.Run("sqlite", func(b *testing.B) {
		db, err := openSQLite(ctx, benchConfig())
		if err != nil {
			b.Fatal(err)
		}
		defer db.close()
		fn(b, db.store)
	})
	b.Run("postgres", func(b *testing.B) {
		db, err := openPostgres(ctx, benchConfig())
		if err != nil {
			skipOrFail(b, err)
		}
		defer db.close()
		fn(b, db.store)
	})
}

func benchConfig() *config {
	return &config{
		writers:     1,
		postgresURL: env("CAP_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"),
		rabbitURL:   env("CAP_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/"),
	}
}

func skipOrFail(b *testing.B, err error) {
	b.Helper()
	if os.Getenv("CI") == "true" {
		b.Fatal(err)
	}
	b.Skip(err)
}

// rowStore is the part of a storage the storage benchmarks use, which does
// not depend on the transaction type.
type rowStore interface {
	InsertPublished(ctx context.Context, recs []*storage.Record) error
	InsertReceived(ctx context.Context, rec *storage.Record) (bool, error)
	InsertReceivedBatch(ctx context.Context, recs []*storage.Record) ([]bool, error)
	Claim(ctx context.Context, t storage.Table, req storage.ClaimRequest) ([]*storage.Record, error)
	Reschedule(ctx context.Context, t storage.Table, ids []int64, in time.Duration) error
}

// discard is a storage that keeps nothing, so that BenchmarkPublishBuild
// measures the process's own work.
type (
	discard   struct{}
	discardTx struct{}
)

var _ storage.Storage[discardTx] = discard{}

func (discard) Migrate(context.Context) error                            { return nil }
func (discard) Begin(context.Context) (discardTx, error)                 { return discardTx{}, nil }
func (discard) Commit(context.Context, discardTx) error                  { return nil }
func (discard) Rollback(context.Context, discardTx) error                { return nil }
func (discard) InsertPublished(context.Context, []*storage.Record) error { return nil }
func (discard) InsertPublishedTx(context.Context, discardTx, []*storage.Record) error {
	return nil
}
func (discard) InsertReceived(context.Context, *storage.Record) (bool, error) { return true, nil }
func (discard) InsertReceivedBatch(_ context.Context, recs []*storage.Record) ([]bool, error) {
	return make([]bool, len(recs)), nil
}
func (discard) Claim(context.Context, storage.Table, storage.ClaimRequest) ([]*storage.Record, error) {
	return nil, nil
}
func (discard) Reschedule(context.Context, storage.Table, []int64, time.Duration) error { return nil }
func (discard) SetOutcomes(context.Context, storage.Table, []storage.Outcome) error     { return nil }
func (discard) SetOutcomesTx(context.Context, discardTx, storage.Table, []storage.Outcome) error {
	return nil
}
func (discard) DeleteExpired(context.Context, storage.Table, int) (int64, error) { return 0, nil }
func (discard) Get(context.Context, storage.Table, int64) (*storage.Record, error) {
	return nil, storage.ErrNotFound
}
func (discard) List(context.Context, storage.Table, storage.ListQuery) ([]*storage.Record, int64, error) {
	return nil, 0, nil
}
func (discard) Counts(context.Context, storage.Table) (map[storage.Status]int64, error) {
	return nil, nil
}
func (discard) Delete(context.Context, storage.Table, []int64) error { return nil }
