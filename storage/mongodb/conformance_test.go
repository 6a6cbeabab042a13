package mongodb_test

import (
	"testing"

	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/storagetest"
)

func TestConformance(t *testing.T) {
	c := connect(t)
	probe := newStore(t, c)
	h := storagetest.Harness[*mongo.Session]{
		New: func(t *testing.T) storage.Storage[*mongo.Session] { return newStore(t, c) },
	}
	if !probe.TransactionsSupported() {
		h.NoTransactions = "the server has no multi-document transactions (FerretDB or a standalone mongod); set CAP_TEST_MONGO to a replica set"
	}
	if ferret {
		// Measured on the embedded FerretDB 1.24 (SQLite): a find over
		// 2,000 documents takes 0.3 to 1.3 s (no index is used, every
		// document is decoded), so 2,000 rows cannot be claimed within the
		// subtest's 10 s. Claim exclusivity under concurrency is tested on
		// FerretDB by TestConcurrentClaimsSmall.
		h.Skip = map[string]string{"ConcurrentClaimers": "embedded FerretDB scans too slowly for 2,000 rows in 10 s; run with CAP_TEST_MONGO"}
	}
	storagetest.Run(t, h)
}
