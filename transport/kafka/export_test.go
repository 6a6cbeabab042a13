package kafka

import (
	"testing"
	"time"
)

// commitPasses counts a transport's periodic commit passes; the transport
// must not have subscribed yet.
type commitPasses struct{ c chan struct{} }

func countCommitPasses(tr *Transport) *commitPasses {
	p := &commitPasses{c: make(chan struct{}, 1024)}
	tr.afterCommitPass = func() {
		select {
		case p.c <- struct{}{}:
		default: // full: wait drains it before it counts
		}
	}
	return p
}

// wait returns once n commit passes have begun and ended after it was
// called: a pass that had begun before the call may have read the
// watermark as it was then, so it is not counted.
func (p *commitPasses) wait(t *testing.T, n int) {
	t.Helper()
	for {
		select {
		case <-p.c:
			continue
		default:
		}
		break
	}
	timeout := time.After(waitLong)
	for i := 0; i < n+1; i++ {
		select {
		case <-p.c:
		case <-timeout:
			t.Fatalf("%d of %d commit passes in %s", max(i-1, 0), n, waitLong)
		}
	}
}
