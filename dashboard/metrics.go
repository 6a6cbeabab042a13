package dashboard

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage"
)

const realtimeLen = 300 // seconds kept, as CAP

type counts struct {
	at        time.Time
	published int64
	handled   int64
	runs      int64
	runNanos  int64
}

func statsOf(s cap.Stats) counts {
	return counts{at: s.Taken, published: s.Published, handled: s.HandledSucceeded + s.HandledRetry + s.HandledFailed,
		runs: s.Processed, runNanos: int64(s.ProcessedTime)}
}

// realtime keeps per-second rates derived from the bus's running totals.
// It samples when asked (each /metrics-realtime request): the change since
// the last sample is spread evenly over the seconds in between, so no
// goroutine runs and no query is made.
type realtime struct {
	mu                         sync.Mutex
	last                       counts
	sec                        []int64
	pub, handled, elapsedMilli []float64
}

func newRealtime() *realtime { return &realtime{} }

func (rt *realtime) sample(c counts) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.last.at.IsZero() {
		rt.last = c
		return
	}
	from, to := rt.last.at.Unix(), c.at.Unix()
	if to <= from {
		return // same second: wait for the next one
	}
	n := to - from
	dp := float64(c.published-rt.last.published) / float64(n)
	dh := float64(c.handled-rt.last.handled) / float64(n)
	var ms float64
	if runs := c.runs - rt.last.runs; runs > 0 {
		ms = float64(c.runNanos-rt.last.runNanos) / float64(runs) / 1e6
	}
	if n > realtimeLen {
		from = to - realtimeLen
	}
	for s := from + 1; s <= to; s++ {
		rt.sec = append(rt.sec, s)
		rt.pub = append(rt.pub, dp)
		rt.handled = append(rt.handled, dh)
		rt.elapsedMilli = append(rt.elapsedMilli, ms)
	}
	if k := len(rt.sec) - realtimeLen; k > 0 {
		rt.sec, rt.pub, rt.handled, rt.elapsedMilli = rt.sec[k:], rt.pub[k:], rt.handled[k:], rt.elapsedMilli[k:]
	}
	rt.last = c
}

// The response of /metrics-realtime: CAP sends four arrays, the
// timeline and the publish, invoke and elapsed rates.
type realtimeResp [4][]float64

func (h *handler[TTx]) realtime(w http.ResponseWriter, r *http.Request) {
	h.rt.sample(statsOf(h.bus.Stats()))
	h.rt.mu.Lock()
	var out realtimeResp
	out[0] = make([]float64, len(h.rt.sec))
	for i, s := range h.rt.sec {
		out[0][i] = float64(s)
	}
	out[1] = append([]float64{}, h.rt.pub...)
	out[2] = append([]float64{}, h.rt.handled...)
	out[3] = append([]float64{}, h.rt.elapsedMilli...)
	h.rt.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

type historyResp struct {
	DayHour            []int64 `json:"dayHour"`
	PublishSuccessed   []int64 `json:"publishSuccessed"`
	PublishFailed      []int64 `json:"publishFailed"`
	SubscribeSuccessed []int64 `json:"subscribeSuccessed"`
	SubscribeFailed    []int64 `json:"subscribeFailed"`
	// Truncated: more rows were added in one of the series than the
	// dashboard reads (historyMaxRows) from a storage that cannot count
	// them by hour; its oldest hours are short.
	Truncated bool `json:"truncated"`
}

type historyCache struct {
	mu   sync.Mutex
	at   time.Time
	resp *historyResp
}

// historyMaxRows bounds the rows read per series for the 24-hour history
// on a storage that is not a storage.HistoryReader: it pages through List
// (newest Added first, on the status-and-Added index) until the rows are
// older than 24 hours.
const historyMaxRows = 20000

func (h *handler[TTx]) history(w http.ResponseWriter, r *http.Request) {
	h.hist.mu.Lock()
	defer h.hist.mu.Unlock()
	if h.hist.resp != nil && time.Since(h.hist.at) < h.opts.HistoryCacheFor {
		writeJSON(w, http.StatusOK, h.hist.resp)
		return
	}
	now := time.Now().UTC().Truncate(time.Hour)
	first := now.Add(-23 * time.Hour)
	resp := &historyResp{}
	for i := range 24 {
		resp.DayHour = append(resp.DayHour, first.Add(time.Duration(i)*time.Hour).Unix())
	}
	series := []struct {
		t   storage.Table
		s   storage.Status
		dst *[]int64
	}{
		{storage.Published, storage.StatusSucceeded, &resp.PublishSuccessed},
		{storage.Published, storage.StatusFailed, &resp.PublishFailed},
		{storage.Received, storage.StatusSucceeded, &resp.SubscribeSuccessed},
		{storage.Received, storage.StatusFailed, &resp.SubscribeFailed},
	}
	for _, se := range series {
		buckets, trunc, err := h.hourly(r.Context(), se.t, se.s, first)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
		*se.dst = buckets
		resp.Truncated = resp.Truncated || trunc
	}
	h.hist.resp, h.hist.at = resp, time.Now()
	writeJSON(w, http.StatusOK, resp)
}

// hourly counts the rows of status s added in each of the 24 hours from
// first: in one indexed query where the storage is a storage.HistoryReader,
// else by paging through List.
func (h *handler[TTx]) hourly(ctx context.Context, t storage.Table, s storage.Status, first time.Time) ([]int64, bool, error) {
	out := make([]int64, 24)
	if hr, ok := h.bus.Storage().(storage.HistoryReader); ok {
		counts, err := hr.CountByHour(ctx, t, s, first)
		if err != nil {
			return nil, false, err
		}
		for _, c := range counts {
			if i := int(c.Hour.UTC().Sub(first) / time.Hour); i >= 0 && i < 24 {
				out[i] += c.Count
			}
		}
		return out, false, nil
	}
	const page = 500
	for off := 0; off < historyMaxRows; off += page {
		recs, _, err := h.bus.Storage().List(ctx, t, storage.ListQuery{Status: s, Offset: off, Limit: page})
		if err != nil {
			return nil, false, err
		}
		for _, rec := range recs {
			if rec.Added.Before(first) {
				return out, false, nil
			}
			if i := int(rec.Added.UTC().Sub(first) / time.Hour); i >= 0 && i < 24 {
				out[i]++
			}
		}
		if len(recs) < page {
			return out, false, nil
		}
	}
	return out, true, nil
}
