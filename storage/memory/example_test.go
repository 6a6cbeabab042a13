package memory_test

import (
	"context"
	"fmt"
	"time"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/memory"
)

// A row published in a transaction becomes visible, and claimable, when the
// transaction commits; OnCommit attaches other effects to the same commit.
func Example() {
	ctx := context.Background()
	s := memory.New()

	tx, _ := s.Begin(ctx)
	_ = s.InsertPublishedTx(ctx, tx, []*storage.Record{{
		ID: 1, Version: "v1", Name: "order.created", Content: []byte(`{"Headers":{},"Value":{"id":42}}`),
	}})
	tx.OnCommit(func() { fmt.Println("committed") })

	claimed, _ := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Minute})
	fmt.Println("claimed before commit:", len(claimed))

	_ = s.Commit(ctx, tx)
	claimed, _ = s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Minute})
	fmt.Println("claimed after commit:", claimed[0].Name)
	// Output:
	// claimed before commit: 0
	// committed
	// claimed after commit: order.created
}
