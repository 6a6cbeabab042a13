package retry

import (
	"testing"
	"time"
)

func TestCAPPolicy(t *testing.T) {
	t.Parallel()
	p := CAP{}
	for r := 1; r < 3; r++ {
		if d, ok := p.Next(r); !ok || d != 0 {
			t.Fatalf("retries %d: got %v %v, want immediate", r, d, ok)
		}
	}
	for r := 3; r < 50; r++ {
		if d, ok := p.Next(r); !ok || d != DefaultInterval {
			t.Fatalf("retries %d: got %v %v, want %v", r, d, ok, DefaultInterval)
		}
	}
	if _, ok := p.Next(50); ok {
		t.Fatal("retries 50: want give up")
	}
	if got := MaxRetries(p); got != 50 {
		t.Fatalf("MaxRetries = %d", got)
	}
	q := CAP{MaxRetries: 5, Interval: time.Second, ImmediateAttempts: -1}
	if d, ok := q.Next(1); !ok || d != time.Second {
		t.Fatalf("no immediate: got %v %v", d, ok)
	}
}

func TestExponentialPolicy(t *testing.T) {
	t.Parallel()
	p := Exponential{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0.1, MaxRetries: 10}
	prevHi := time.Duration(0)
	for r := 1; r < 10; r++ {
		d, ok := p.Next(r)
		if !ok {
			t.Fatalf("retries %d: gave up", r)
		}
		base := 100 * time.Millisecond << (r - 1)
		if base > time.Second {
			base = time.Second
		}
		lo, hi := time.Duration(float64(base)*0.9), time.Duration(float64(base)*1.1)
		if d < lo || d > hi {
			t.Fatalf("retries %d: delay %v outside [%v, %v]", r, d, lo, hi)
		}
		if hi < prevHi {
			t.Fatalf("bounds shrink")
		}
		prevHi = hi
	}
	if _, ok := p.Next(10); ok {
		t.Fatal("want give up at MaxRetries")
	}
	if MaxRetries(p) != 10 {
		t.Fatal("MaxRetries")
	}
}

type custom struct{}

func (custom) Next(r int) (time.Duration, bool) { return time.Millisecond, r < 7 }

func TestMaxRetriesCustom(t *testing.T) {
	t.Parallel()
	if got := MaxRetries(custom{}); got != 7 {
		t.Fatalf("got %d", got)
	}
}
