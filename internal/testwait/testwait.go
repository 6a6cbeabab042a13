// Package testwait waits, in the library's tests, for state that gives no
// signal of its own (a database row, a broker's queue, a server coming up)
// by polling it until a deadline. It is for tests only: no non-test code of
// the library imports it.
//
// Between two polls it sleeps a tenth of the time waited so far, at least
// 1 ms and at most 250 ms: a condition that holds soon is seen soon, and a
// long wait (a database reading every document, a server restarting) polls
// gently.
package testwait

import (
	"fmt"
	"testing"
	"time"
)

const (
	minPause = time.Millisecond
	maxPause = 250 * time.Millisecond
)

// Poll calls check until it returns nil, and returns nil then. Once d has
// passed with check still failing, it returns check's last error.
func Poll(d time.Duration, check func() error) error {
	start := time.Now()
	for {
		err := check()
		if err == nil {
			return nil
		}
		waited := time.Since(start)
		if waited >= d {
			return err
		}
		time.Sleep(min(max(waited/10, minPause), maxPause, d-waited))
	}
}

// Until calls cond until it returns true. Once d has passed with cond still
// false, it fails t with "timed out after d: " and the message format and
// args make. cond runs on the caller's goroutine, so it may fail t itself.
func Until(t testing.TB, d time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	if Poll(d, func() error {
		if cond() {
			return nil
		}
		return errFalse
	}) != nil {
		t.Fatalf("timed out after %s: %s", d, fmt.Sprintf(format, args...))
	}
}

// UntilNil calls check until it returns nil. Once d has passed with check
// still failing, it fails t with "timed out after d: " and check's last
// error, which can so describe the state last seen. check runs on the
// caller's goroutine, so it may fail t itself.
func UntilNil(t testing.TB, d time.Duration, check func() error) {
	t.Helper()
	if err := Poll(d, check); err != nil {
		t.Fatalf("timed out after %s: %v", d, err)
	}
}

var errFalse = fmt.Errorf("condition false")
