package mongodb_test

import (
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/storagetest"
)

// TestBus runs the shared bus suite without business transactions: whole
// buses publish with Publish, each message is handled once per group, and
// three instances share one database, one of them stopped abruptly while
// it holds claimed documents.
func TestBus(t *testing.T) {
	c := connect(t)
	h := storagetest.BusHarness[*mongo.Session]{
		New: func(t *testing.T) (storage.Storage[*mongo.Session], func(t *testing.T) storage.Storage[*mongo.Session]) {
			s := newStore(t, c)
			return s, func(t *testing.T) storage.Storage[*mongo.Session] {
				another, err := newStoreOn(t, c, s.Database().Name())
				if err != nil {
					t.Fatal(err)
				}
				return another
			}
		},
		// The business statements of the suite are SQL; a replica set's
		// transactions are covered by the conformance suite.
		NoTransactions: "the suite's business statements are SQL",
		PollInterval:   500 * time.Millisecond,
	}
	if ferret {
		// FerretDB 1.24 decodes every document of a collection for each
		// claim, outcome update and count (see TestConformance): 2,000
		// messages, and waits of two minutes.
		h.Messages = 2000
		h.Timeout = 2 * time.Minute
		// Its SQLite handler updates a document by reading it and then
		// writing it, outside one transaction: of two updates of one
		// document that race, one is lost. With the suite's short leases
		// (900 ms, 2 s), claims (seconds long here) took rows whose leases
		// had lapsed while they were handled or sent, and such a claim
		// overwrote the Succeeded outcome written meanwhile: the row came
		// back, and its handler ran again or two instances sent it. A
		// lease no claim outlasts keeps them apart, as it is on MongoDB,
		// whose updates of one document are atomic.
		h.Lease = 10 * time.Second
	}
	storagetest.RunBus(t, h)
}
