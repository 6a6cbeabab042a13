package testwait_test

import (
	"errors"
	"testing"
	"time"

	"github.com/go-cap/cap/internal/testwait"
)

func TestPollReturnsOnceCheckPasses(t *testing.T) {
	n := 0
	err := testwait.Poll(5*time.Second, func() error {
		n++
		if n < 5 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n != 5 {
		t.Fatalf("Poll = %v after %d checks, want nil after 5", err, n)
	}
}

func TestPollReturnsTheLastErrorAtTheDeadline(t *testing.T) {
	n := 0
	start := time.Now()
	err := testwait.Poll(50*time.Millisecond, func() error {
		n++
		return errors.New("seen " + string(rune('0'+min(n, 9))))
	})
	if took := time.Since(start); took < 50*time.Millisecond || took > 2*time.Second {
		t.Fatalf("Poll returned after %s, want about 50 ms", took)
	}
	if err == nil || n < 2 || err.Error() != "seen "+string(rune('0'+min(n, 9))) {
		t.Fatalf("Poll = %v after %d checks, want the last check's error", err, n)
	}
}
