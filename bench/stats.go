package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/transport"
)

// statStore counts the storage calls the bus makes, for -stats: how many
// statements of each kind a run cost, and how many rows they carried.
type statStore[TTx any] struct {
	storage.Storage[TTx]
	mu    sync.Mutex
	calls map[string]*callStat
}

type callStat struct {
	calls, rows int64
	time        time.Duration
}

func newStatStore[TTx any](s storage.Storage[TTx]) *statStore[TTx] {
	return &statStore[TTx]{Storage: s, calls: map[string]*callStat{}}
}

func (s *statStore[TTx]) count(name string, rows int, start time.Time) {
	d := time.Since(start)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[name]
	if c == nil {
		c = &callStat{}
		s.calls[name] = c
	}
	c.calls++
	c.rows += int64(rows)
	c.time += d
}

// summary lists the calls, most frequent first.
func (s *statStore[TTx]) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.calls))
	for n := range s.calls {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return int(s.calls[b].calls - s.calls[a].calls) })
	var b strings.Builder
	for _, n := range names {
		c := s.calls[n]
		fmt.Fprintf(&b, "  %-28s calls=%-7d rows=%-7d rows/call=%-6s avg=%s\n", n, c.calls, c.rows,
			num(float64(c.rows)/float64(c.calls)), ms(c.time/time.Duration(c.calls)))
	}
	return strings.TrimRight(b.String(), "\n")
}

// Notifications passes the storage's notifications on, so that wrapping
// does not turn them off.
func (s *statStore[TTx]) Notifications(ctx context.Context) (<-chan struct{}, error) {
	if n, ok := s.Storage.(storage.Notifier); ok {
		return n.Notifications(ctx)
	}
	ch := make(chan struct{})
	context.AfterFunc(ctx, func() { close(ch) })
	return ch, nil
}

// checkedStatStore is a statStore over a storage.ReceivedChecker, which it
// passes on: the wrapper must not change the path the bus takes.
type checkedStatStore[TTx any] struct{ *statStore[TTx] }

func (s checkedStatStore[TTx]) ReceivedExists(ctx context.Context, keys []storage.ReceivedKey) ([]bool, error) {
	defer s.count("ReceivedExists", len(keys), time.Now())
	return s.Storage.(storage.ReceivedChecker).ReceivedExists(ctx, keys)
}

func (s *statStore[TTx]) InsertPublished(ctx context.Context, recs []*storage.Record) error {
	defer s.count("InsertPublished", len(recs), time.Now())
	return s.Storage.InsertPublished(ctx, recs)
}

func (s *statStore[TTx]) InsertPublishedTx(ctx context.Context, tx TTx, recs []*storage.Record) error {
	defer s.count("InsertPublishedTx", len(recs), time.Now())
	return s.Storage.InsertPublishedTx(ctx, tx, recs)
}

func (s *statStore[TTx]) InsertReceived(ctx context.Context, rec *storage.Record) (bool, error) {
	defer s.count("InsertReceived", 1, time.Now())
	return s.Storage.InsertReceived(ctx, rec)
}

func (s *statStore[TTx]) InsertReceivedBatch(ctx context.Context, recs []*storage.Record) ([]bool, error) {
	defer s.count("InsertReceivedBatch", len(recs), time.Now())
	return s.Storage.InsertReceivedBatch(ctx, recs)
}

func (s *statStore[TTx]) Claim(ctx context.Context, t storage.Table, req storage.ClaimRequest) ([]*storage.Record, error) {
	start := time.Now()
	recs, err := s.Storage.Claim(ctx, t, req)
	s.count("Claim "+t.String(), len(recs), start)
	return recs, err
}

func (s *statStore[TTx]) Reschedule(ctx context.Context, t storage.Table, ids []int64, in time.Duration) error {
	defer s.count("Reschedule "+t.String(), len(ids), time.Now())
	return s.Storage.Reschedule(ctx, t, ids, in)
}

func (s *statStore[TTx]) SetOutcomes(ctx context.Context, t storage.Table, outs []storage.Outcome) error {
	defer s.count("SetOutcomes "+t.String(), len(outs), time.Now())
	return s.Storage.SetOutcomes(ctx, t, outs)
}

func (s *statStore[TTx]) SetOutcomesTx(ctx context.Context, tx TTx, t storage.Table, outs []storage.Outcome) error {
	defer s.count("SetOutcomesTx "+t.String(), len(outs), time.Now())
	return s.Storage.SetOutcomesTx(ctx, tx, t, outs)
}

func (s *statStore[TTx]) Commit(ctx context.Context, tx TTx) error {
	defer s.count("Commit", 0, time.Now())
	return s.Storage.Commit(ctx, tx)
}

// statTransport counts the bus's sends, for -stats.
type statTransport struct {
	transport.Transport
	mu           sync.Mutex
	calls, msgs  int64
	failed       int64
	time         time.Duration
	largestBatch int
}

func (s *statTransport) SendBatch(ctx context.Context, msgs []*message.Message) []error {
	start := time.Now()
	errs := s.Transport.SendBatch(ctx, msgs)
	s.record(len(msgs), errs, time.Since(start))
	return errs
}

// PublishBatch implements transport.Pipeliner as the wrapped transport
// does; the time counted runs from the publish to the last confirm.
func (s *statTransport) PublishBatch(ctx context.Context, msgs []*message.Message) func() []error {
	start := time.Now()
	wait := publishBatch(ctx, s.Transport, msgs)
	return func() []error {
		errs := wait()
		s.record(len(msgs), errs, time.Since(start))
		return errs
	}
}

func (s *statTransport) record(n int, errs []error, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.msgs += int64(n)
	s.time += d
	s.largestBatch = max(s.largestBatch, n)
	for _, e := range errs {
		if e != nil {
			s.failed++
		}
	}
}

func (s *statTransport) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls == 0 {
		return "  SendBatch                    calls=0"
	}
	return fmt.Sprintf("  %-28s calls=%-7d msgs=%-7d msgs/call=%-6s largest=%d failed=%d avg=%s", "SendBatch", s.calls,
		s.msgs, num(float64(s.msgs)/float64(s.calls)), s.largestBatch, s.failed, ms(s.time/time.Duration(s.calls)))
}
