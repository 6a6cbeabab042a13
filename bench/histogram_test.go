package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHistogramPercentiles(t *testing.T) {
	t.Parallel()
	var h histogram
	require.Zero(t, h.percentile(50), "empty histogram")
	for i := 1; i <= 10000; i++ { // 1 µs .. 10 ms, evenly
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 5 * time.Millisecond}, {95, 9500 * time.Microsecond}, {99, 9900 * time.Microsecond}, {100, 10 * time.Millisecond}} {
		got := h.percentile(c.p)
		require.InDelta(t, float64(c.want), float64(got), float64(c.want)/50, "p%v", c.p)
	}
	require.Equal(t, 10*time.Millisecond, h.maximum())
	require.EqualValues(t, 10000, h.count())
	h.reset()
	require.Zero(t, h.count())
}

func TestHistogramBuckets(t *testing.T) {
	t.Parallel()
	prev := -1
	for us := int64(0); us < 1<<22; us += 1 + us/100 {
		i := bucketOf(us)
		require.GreaterOrEqual(t, i, prev, "buckets grow with the value (%d µs)", us)
		prev = i
		mid := bucketMid(i)
		require.InDelta(t, float64(us), mid, float64(us)/60+1, "bucket %d of %d µs", i, us)
	}
}

func TestTrackerPairsEitherOrder(t *testing.T) {
	t.Parallel()
	tr := newTracker()
	base := time.Now()
	tr.committed(1, base)
	tr.started(1, base.Add(3*time.Millisecond))
	tr.started(2, base.Add(5*time.Millisecond)) // the handler reports first
	tr.committed(2, base)
	tr.started(3, base)
	tr.committed(3, base.Add(time.Millisecond)) // before its commit returned: zero
	require.EqualValues(t, 3, tr.hist.count())
	require.InDelta(t, float64(5*time.Millisecond), float64(tr.hist.maximum()), float64(100*time.Microsecond))
	require.Zero(t, tr.hist.percentile(1))
	require.True(t, strings.HasPrefix(tr.hist.summary(), "n=3 "), tr.hist.summary())
}

func TestParseDefaultsAndChoices(t *testing.T) {
	t.Parallel()
	var stderr strings.Builder
	cfg, err := parse([]string{"publish-overhead", "-storage", "postgres"}, &stderr)
	require.NoError(t, err)
	require.Equal(t, 16, cfg.writers)
	require.Equal(t, 20*time.Second, cfg.duration)
	require.Equal(t, 4, cfg.rounds)
	_, err = parse([]string{"publish-overhead", "-rounds", "0"}, &stderr)
	require.ErrorContains(t, err, "-rounds")
	cfg, err = parse([]string{"soak"}, &stderr)
	require.NoError(t, err)
	require.Equal(t, 2*time.Minute, cfg.duration)
	require.Equal(t, 8, cfg.writers)
	cfg, err = parse([]string{"burn-down"}, &stderr)
	require.NoError(t, err)
	require.Equal(t, 20000, cfg.n)

	_, err = parse([]string{"latency", "-storage", "mongodb"}, &stderr)
	require.NoError(t, err, "every storage the library has is accepted")
	require.ErrorContains(t, checkChoice("storage", "cassandra", []string{"postgres"}, []string{"cassandra"}),
		"not implemented by the library yet")
	_, err = parse([]string{"latency", "-storage", "mysql"}, &stderr)
	require.NoError(t, err)
	_, err = parse([]string{"latency", "-transport", "kafka"}, &stderr)
	require.NoError(t, err, "every transport the library has is accepted")
	_, err = parse([]string{"latency", "-transport", "carrier-pigeon"}, &stderr)
	require.ErrorContains(t, err, "unknown transport")
	_, err = parse([]string{"warp-speed"}, &stderr)
	require.ErrorContains(t, err, "unknown scenario")
}

func TestResultLine(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	r := &report{w: &out}
	r.result(&config{scenario: "burn-down", storage: "postgres", transport: "rabbitmq"},
		result{value: 9876.4, baseline: 12345.6, unit: "msg/s"})
	require.Equal(t, "RESULT scenario=burn-down storage=postgres transport=rabbitmq value=9876 unit=msg/s baseline=12346 ratio=0.800\n",
		out.String())
}
