package memory

import (
	"container/heap"
	"time"
)

// slot says which of a row's times a heap orders by; a row sits in at most
// one heap per slot and remembers its index there.
type slot int

const (
	dueSlot    slot = iota // NextAttemptAt: claims take the earliest due rows
	expirySlot             // ExpiresAt: DeleteExpired takes the earliest expired rows
	slots
)

// rowHeap is a min-heap of rows by one of their times, then by id. It
// implements heap.Interface; use put and drop rather than heap's functions.
type rowHeap struct {
	slot slot
	rows []*row
}

func (h *rowHeap) key(r *row) time.Time {
	if h.slot == dueSlot {
		return *r.rec.NextAttemptAt
	}
	return *r.rec.ExpiresAt
}

// Len implements heap.Interface.
func (h *rowHeap) Len() int { return len(h.rows) }

// Less implements heap.Interface.
func (h *rowHeap) Less(i, j int) bool {
	a, b := h.rows[i], h.rows[j]
	if c := h.key(a).Compare(h.key(b)); c != 0 {
		return c < 0
	}
	return a.rec.ID < b.rec.ID
}

// Swap implements heap.Interface.
func (h *rowHeap) Swap(i, j int) {
	h.rows[i], h.rows[j] = h.rows[j], h.rows[i]
	h.rows[i].pos[h.slot] = i
	h.rows[j].pos[h.slot] = j
}

// Push implements heap.Interface.
func (h *rowHeap) Push(x any) {
	r := x.(*row)
	r.pos[h.slot] = len(h.rows)
	h.rows = append(h.rows, r)
}

// Pop implements heap.Interface.
func (h *rowHeap) Pop() any {
	n := len(h.rows) - 1
	r := h.rows[n]
	h.rows[n] = nil // let the row be collected once it is deleted
	h.rows = h.rows[:n]
	r.pos[h.slot] = -1
	// Give memory back after a large backlog drained.
	if c := cap(h.rows); c > 1024 && n < c/4 {
		h.rows = append(make([]*row, 0, 2*n), h.rows...)
	}
	return r
}

// put inserts r, or restores the order after r's key changed.
func (h *rowHeap) put(r *row) {
	if i := r.pos[h.slot]; i >= 0 {
		heap.Fix(h, i)
		return
	}
	heap.Push(h, r)
}

// drop removes r if it is in the heap.
func (h *rowHeap) drop(r *row) {
	if i := r.pos[h.slot]; i >= 0 {
		heap.Remove(h, i)
	}
}

// peek returns the first row, or nil.
func (h *rowHeap) peek() *row {
	if len(h.rows) == 0 {
		return nil
	}
	return h.rows[0]
}
