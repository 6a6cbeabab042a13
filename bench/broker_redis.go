package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
	capredis "github.com/go-cap/cap/transport/redis"
)

func init() {
	addServerFlag("redis", "CAP_TEST_REDIS", "redis://127.0.0.1:6379/0", "Redis URL")
	registerTransport("redis", openRedis)
}

// redisBroker is Redis's raw side: a client of its own for the baselines,
// purges and the clean-up of the run's streams (all named after its prefix).
type redisBroker struct {
	prefix string
	rdb    *goredis.Client
}

func openRedis(ctx context.Context, cfg *config, prefix string) (transport.Transport, rawBroker, error) {
	url := cfg.server("redis")
	opts, err := goredis.ParseURL(url)
	if err != nil {
		return nil, nil, fmt.Errorf("redis URL %q: %w", url, err)
	}
	rdb := goredis.NewClient(opts)
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, nil, fmt.Errorf("redis at %s (set -redis or CAP_TEST_REDIS): %w", opts.Addr, err)
	}
	tr, err := capredis.New(capredis.Config{URL: url, ConsumerName: "cap-bench", Logger: cfg.logger()})
	if err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	return tr, &redisBroker{prefix: prefix, rdb: rdb}, nil
}

// purge empties a group: it is destroyed, with its pending list, and
// created again at the end of the stream.
func (r *redisBroker) purge(ctx context.Context, group, topic string) error {
	if err := r.rdb.XGroupDestroy(ctx, topic, group).Err(); err != nil {
		return err
	}
	return r.rdb.XGroupCreateMkStream(ctx, topic, group, "$").Err()
}

// close removes the run's groups from the bench's topic (deleting the
// stream once no group is left on it: another run may share it) and every
// stream named after the run's prefix (the baselines').
func (r *redisBroker) close(groups []string) {
	defer r.rdb.Close()
	ctx := context.Background()
	for _, g := range groups {
		if err := r.rdb.XGroupDestroy(ctx, topic, g).Err(); err != nil && !goredis.HasErrorPrefix(err, "NOGROUP") &&
			!goredis.HasErrorPrefix(err, "ERR no such key") {
			fmt.Fprintf(os.Stderr, "bench: redis: destroy group %s: %v\n", g, err)
		}
	}
	if gs, err := r.rdb.XInfoGroups(ctx, topic).Result(); err == nil && len(gs) == 0 {
		_ = r.rdb.Del(ctx, topic).Err()
	}
	var cursor uint64
	for {
		keys, next, err := r.rdb.Scan(ctx, cursor, r.prefix+"*", 1000).Result()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: redis clean-up:", err)
			return
		}
		if len(keys) > 0 {
			if err := r.rdb.Del(ctx, keys...).Err(); err != nil {
				fmt.Fprintln(os.Stderr, "bench: redis clean-up:", err)
			}
		}
		if cursor = next; cursor == 0 {
			return
		}
	}
}

// rawStream names a baseline's stream inside the run's prefix.
func (r *redisBroker) rawStream(topic string) string { return r.prefix + ".raw." + topic }

// rawSend sends msgs with pipelined XADDs, 100 a pipeline and four
// pipelines in flight, in the transport's wire format.
func (r *redisBroker) rawSend(ctx context.Context, msgs []*message.Message) error {
	const batch, inFlight = 100, 4
	sem := make(chan struct{}, inFlight)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for i := 0; i < len(msgs); i += batch {
		part := msgs[i:min(i+batch, len(msgs))]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_, err := r.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
				for _, m := range part {
					p.XAdd(ctx, &goredis.XAddArgs{Stream: m.Name(), Values: capredis.EntryFields(m)})
				}
				return nil
			})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// rawLatency: one XADD a message; the consumer reads with XREADGROUP
// COUNT 10 BLOCK and acknowledges each entry, as the transport does.
func (r *redisBroker) rawLatency(ctx context.Context, p *latencyProbe, topic, group string) error {
	stream := r.rawStream(topic)
	if err := r.rdb.XGroupCreateMkStream(ctx, stream, group, "$").Err(); err != nil &&
		!goredis.HasErrorPrefix(err, "BUSYGROUP") {
		return err
	}
	reader := goredis.NewClient(r.rdb.Options())
	defer reader.Close()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for cctx.Err() == nil {
			res, err := reader.XReadGroup(cctx, &goredis.XReadGroupArgs{Group: group, Consumer: "raw",
				Streams: []string{stream, ">"}, Count: 10, Block: 100 * time.Millisecond}).Result()
			if err != nil {
				continue
			}
			for _, s := range res {
				for _, m := range s.Messages {
					if msg, err := capredis.DecodeEntry(m); err == nil {
						p.received(msg.Headers)
					}
					_ = r.rdb.XAck(cctx, stream, group, m.ID).Err()
				}
			}
		}
	}()
	err := p.run(ctx, func(ctx context.Context) error {
		return r.rdb.XAdd(ctx, &goredis.XAddArgs{Stream: stream, Values: capredis.EntryFields(p.stamp())}).Err()
	})
	cancel()
	<-done
	return err
}
