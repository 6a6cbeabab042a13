package consumerset

import (
	"slices"
	"sync"
	"testing"
)

func TestSet(t *testing.T) {
	s := New[int]()
	if s.IsClosed() {
		t.Fatal("a new set is closed")
	}
	for i := range 3 {
		if !s.Add(i) {
			t.Fatalf("Add(%d) refused on an open set", i)
		}
	}
	s.Remove(1)
	s.Remove(7) // not there
	var seen []int
	s.Each(func(c int) { seen = append(seen, c) })
	slices.Sort(seen)
	if !slices.Equal(seen, []int{0, 2}) {
		t.Fatalf("Each saw %v, want [0 2]", seen)
	}
	open, first := s.Close()
	slices.Sort(open)
	if !first || !slices.Equal(open, []int{0, 2}) {
		t.Fatalf("Close = %v, %v; want [0 2], true", open, first)
	}
	if !s.IsClosed() {
		t.Fatal("IsClosed false after Close")
	}
	if s.Add(5) {
		t.Fatal("Add accepted after Close")
	}
	if open, first := s.Close(); first || open != nil {
		t.Fatalf("second Close = %v, %v; want nil, false", open, first)
	}
}

// TestAddRacesClose: every Add that reports true is returned by the Close
// that follows it, so no consumer is left open.
func TestAddRacesClose(t *testing.T) {
	for range 50 {
		s := New[int]()
		var wg sync.WaitGroup
		added := make([]bool, 64)
		for i := range added {
			wg.Add(1)
			go func() { defer wg.Done(); added[i] = s.Add(i) }()
		}
		open, _ := s.Close()
		wg.Wait()
		for i, ok := range added {
			if ok != slices.Contains(open, i) {
				t.Fatalf("consumer %d: Add reported %v, in Close's list %v", i, ok, !ok)
			}
		}
	}
}
