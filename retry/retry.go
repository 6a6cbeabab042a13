// Package retry holds the retry policies the bus applies to failed sends and
// failed handlers: CAP's own (a few immediate attempts, then a fixed
// interval) and an exponential backoff with jitter.
package retry

import (
	"math"
	"math/rand/v2"
	"time"
)

// Defaults of CAP's policy (CapOptions.FailedRetryCount and
// FailedRetryInterval, and its three immediate attempts).
const (
	DefaultMaxRetries        = 50
	DefaultInterval          = 60 * time.Second
	DefaultImmediateAttempts = 3
)

// Policy decides what follows a failed attempt.
type Policy interface {
	// Next is called after a failure that brought the retry count to
	// retries (1 after the first failure). It returns the delay before the
	// next attempt, zero for an immediate one, or ok == false when the
	// message has used up its attempts.
	Next(retries int) (delay time.Duration, ok bool)
}

// CAP is DotNetCore.CAP's policy: ImmediateAttempts attempts in a row, then
// one attempt every Interval until MaxRetries failures. Zero fields take the
// defaults above; a negative ImmediateAttempts means none.
type CAP struct {
	MaxRetries        int
	Interval          time.Duration
	ImmediateAttempts int
}

// Next implements Policy.
func (p CAP) Next(retries int) (time.Duration, bool) {
	maxRetries := p.MaxRetries
	if maxRetries <= 0 {
		maxRetries = DefaultMaxRetries
	}
	if retries >= maxRetries {
		return 0, false
	}
	imm := p.ImmediateAttempts
	if imm == 0 {
		imm = DefaultImmediateAttempts
	}
	if retries < imm {
		return 0, true
	}
	if p.Interval <= 0 {
		return DefaultInterval, true
	}
	return p.Interval, true
}

// Exponential waits Initial, then Initial*Multiplier, ... capped at Max, each
// delay spread at random by ±Jitter (a fraction), until MaxRetries failures.
// Zero fields take: MaxRetries 50, Initial 1 s, Max 1 h, Multiplier 2,
// Jitter 0.2.
type Exponential struct {
	MaxRetries int
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64
	Jitter     float64
}

// Next implements Policy.
func (p Exponential) Next(retries int) (time.Duration, bool) {
	maxRetries, initial, maxDelay, mult, jitter := p.MaxRetries, p.Initial, p.Max, p.Multiplier, p.Jitter
	if maxRetries <= 0 {
		maxRetries = DefaultMaxRetries
	}
	if retries >= maxRetries {
		return 0, false
	}
	if initial <= 0 {
		initial = time.Second
	}
	if maxDelay <= 0 {
		maxDelay = time.Hour
	}
	if mult < 1 {
		mult = 2
	}
	if jitter <= 0 {
		jitter = 0.2
	}
	d := float64(initial) * math.Pow(mult, float64(retries-1))
	if d > float64(maxDelay) || math.IsInf(d, 0) {
		d = float64(maxDelay)
	}
	d *= 1 + jitter*(2*rand.Float64()-1)
	if d < 0 {
		d = 0
	}
	return time.Duration(d), true
}

// MaxRetries returns the number of failures after which p gives up, found
// by asking it (at most 1,000,000).
func MaxRetries(p Policy) int {
	switch q := p.(type) {
	case CAP:
		if q.MaxRetries > 0 {
			return q.MaxRetries
		}
		return DefaultMaxRetries
	case Exponential:
		if q.MaxRetries > 0 {
			return q.MaxRetries
		}
		return DefaultMaxRetries
	}
	for n := 1; n <= 1_000_000; n++ {
		if _, ok := p.Next(n); !ok {
			return n
		}
	}
	return 1_000_000
}
