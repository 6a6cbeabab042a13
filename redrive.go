package cap

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-cap/cap/storage"
)

// Redrive makes rows of t due at once, whatever their status (a Succeeded
// row too), and wakes the bus's dispatcher (Published) or executor
// (Received) so that they are sent or handled again without waiting for the
// next poll: CAP's requeue and re-execute. A Received row is handled by the
// instance that has its group's handler; this one only if it has. The ids
// that have no row are returned in missing and are not an error; the
// others are re-driven.
func (b *Bus[TTx]) Redrive(ctx context.Context, t storage.Table, ids []int64) (missing []int64, err error) {
	if t != storage.Published && t != storage.Received {
		return nil, fmt.Errorf("%w: unknown table %d", ErrInvalidOptions, t)
	}
	outs := make([]storage.Outcome, 0, len(ids))
	seen := make(map[int64]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		rec, err := b.store.Get(ctx, t, id)
		if errors.Is(err, storage.ErrNotFound) {
			missing = append(missing, id)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cap: redrive: %w", err)
		}
		// Scheduled until the attempt writes its outcome.
		outs = append(outs, storage.Outcome{ID: id, Status: storage.StatusScheduled, Retries: rec.Retries,
			ExpiresIn: 0, Retry: true, RetryIn: 0, Force: true})
	}
	if len(outs) == 0 {
		return missing, nil
	}
	if err := b.store.SetOutcomes(ctx, t, outs); err != nil {
		return nil, fmt.Errorf("cap: redrive: %w", err)
	}
	if t == storage.Published {
		b.disp.Wake()
	} else {
		b.exec.Wake()
	}
	return missing, nil
}
