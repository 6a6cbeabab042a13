package main

import (
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Histogram buckets: values below subCount microseconds are exact; above,
// each power of two is split into subCount/2 buckets, so a bucket is at
// most 1/64 (1.6 %) of its values wide. maxExp covers values up to 2^40 µs
// (about 12 days).
const (
	subBits  = 7
	subCount = 1 << subBits
	half     = subCount / 2
	maxExp   = 40 - subBits + 1
	nBuckets = subCount + maxExp*half
)

// histogram counts durations in fixed memory. It is safe for concurrent
// use.
type histogram struct {
	mu     sync.Mutex
	counts [nBuckets]int64
	total  int64
	max    int64 // µs
}

func bucketOf(us int64) int {
	if us < 0 {
		us = 0
	}
	if us < subCount {
		return int(us)
	}
	e := bits.Len64(uint64(us)) - subBits // us>>e is in [half, subCount)
	i := subCount + (e-1)*half + int(us>>e) - half
	return min(i, nBuckets-1)
}

// bucketMid is the middle of bucket i, in µs.
func bucketMid(i int) float64 {
	if i < subCount {
		return float64(i)
	}
	e := (i-subCount)/half + 1
	lo := int64(half+(i-subCount)%half) << e
	return float64(lo) + float64(int64(1)<<e)/2
}

func (h *histogram) record(d time.Duration) {
	us := d.Microseconds()
	h.mu.Lock()
	h.counts[bucketOf(us)]++
	h.total++
	h.max = max(h.max, us)
	h.mu.Unlock()
}

// count returns the number of recorded values.
func (h *histogram) count() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.total
}

// percentile returns the value below which p percent of the recorded
// values fall, within a bucket's width; zero when nothing was recorded.
func (h *histogram) percentile(p float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.total == 0 {
		return 0
	}
	rank := int64(p / 100 * float64(h.total))
	if float64(rank) < p/100*float64(h.total) {
		rank++
	}
	rank = max(rank, 1)
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketMid(i), float64(h.max)) * float64(time.Microsecond))
		}
	}
	return time.Duration(h.max) * time.Microsecond
}

func (h *histogram) maximum() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return time.Duration(h.max) * time.Microsecond
}

// summary formats count and percentiles.
func (h *histogram) summary() string {
	return "n=" + itoa(h.count()) + " p50=" + ms(h.percentile(50)) + " p95=" + ms(h.percentile(95)) +
		" p99=" + ms(h.percentile(99)) + " max=" + ms(h.maximum())
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// tracker measures the time from a message's commit to the start of its
// handler. Both sides report by sequence number, in either order; the
// second one records the latency. Slots are reused round a ring, so memory
// stays fixed however long the run.
type tracker struct {
	slots []slot
	hist  histogram
	epoch time.Time
}

type slot struct {
	commit atomic.Int64 // ns since epoch
	start  atomic.Int64
	seen   atomic.Int32 // sides that reported
}

// trackerSlots bounds the messages in flight between commit and handler
// (a backlog beyond it mixes up latencies); 3 MiB of slots, allocated once,
// so that they hardly weigh on the soak's heap figures.
const trackerSlots = 1 << 17

func newTracker() *tracker {
	return &tracker{slots: make([]slot, trackerSlots), epoch: time.Now()}
}

// committed reports that message seq committed at t.
func (tr *tracker) committed(seq int64, t time.Time) {
	s := &tr.slots[seq&(trackerSlots-1)]
	s.commit.Store(int64(t.Sub(tr.epoch)))
	if s.seen.Add(1) == 2 {
		tr.done(s)
	}
}

// started reports that the handler of message seq started at t.
func (tr *tracker) started(seq int64, t time.Time) {
	s := &tr.slots[seq&(trackerSlots-1)]
	s.start.Store(int64(t.Sub(tr.epoch)))
	if s.seen.Add(1) == 2 {
		tr.done(s)
	}
}

func (tr *tracker) done(s *slot) {
	// A handler may start a hair before its publisher returns from the
	// commit (the hand-over to the dispatcher happens inside InTx): that
	// counts as zero.
	tr.hist.record(time.Duration(max(s.start.Load()-s.commit.Load(), 0)))
	s.commit.Store(0)
	s.start.Store(0)
	s.seen.Store(0)
}

// reset forgets every recorded value.
func (h *histogram) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.counts = [nBuckets]int64{}
	h.total, h.max = 0, 0
}
