package postgres_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
)

// BenchmarkPublishTx measures what the NOTIFY costs the publishing
// transactions: 16 goroutines each commit transactions holding one business
// row and one due outbox row, with the notification on (and a listener
// running) or off. It reports committed transactions per second.
//
//	go test -run '^$' -bench PublishTx -benchtime 5000x ./storage/postgres/
func BenchmarkPublishTx(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts postgres.Options
	}{
		{"notify-every-tx", postgres.Options{NotifyInterval: -1}},
		{"notify-limited", postgres.Options{}}, // DefaultNotifyInterval
		{"no-notify", postgres.Options{DisableNotify: true}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := newPgx(b, mode.opts)
			if !mode.opts.DisableNotify {
				ch, err := s.Notifications(ctx)
				require.NoError(b, err)
				go func() {
					for range ch {
					}
				}()
			}
			psql(b, `CREATE TABLE "`+s.Schema()+`".orders (id bigint PRIMARY KEY, total int)`)
			const writers = 16
			var (
				next atomic.Int64
				wg   sync.WaitGroup
				errs = make(chan error, writers)
			)
			b.ResetTimer()
			start := time.Now()
			for range writers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if err := publishTx(ctx, s); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(errs)
			for err := range errs {
				require.NoError(b, err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tx/s")
		})
	}
}

func publishTx(ctx context.Context, s *postgres.Store[pgx.Tx]) error {
	tx, err := s.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = s.Rollback(ctx, tx) }()
	r := rec("bench")
	if _, err := tx.Exec(ctx, `INSERT INTO "`+s.Schema()+`".orders (id, total) VALUES ($1, 42)`, r.ID); err != nil {
		return err
	}
	if err := s.InsertPublishedTx(ctx, tx, []*storage.Record{r}); err != nil {
		return err
	}
	return s.Commit(ctx, tx)
}
