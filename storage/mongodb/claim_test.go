package mongodb_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/mongodb"
)

// TestConcurrentClaimsSmall: claimers on two storages (as two instances
// would have) racing over the same due rows never get the same row and
// together get them all.
func TestConcurrentClaimsSmall(t *testing.T) {
	c := connect(t)
	a := newStore(t, c)
	b, err := newStoreOn(t, c, a.Database().Name())
	require.NoError(t, err)
	ids, err := message.NewIDGenerator(1)
	require.NoError(t, err)
	const rows = 300
	var recs []*storage.Record
	for range rows {
		recs = append(recs, &storage.Record{ID: ids.Next(), Version: "v1", Name: "claims", Content: []byte(`{}`), Status: storage.StatusScheduled})
	}
	require.NoError(t, a.InsertPublished(t.Context(), recs))

	var mu sync.Mutex
	owner := map[int64]int{}
	var wg sync.WaitGroup
	// The claimers stop when every row is claimed, or when none was for
	// three times claimKeyStale (a row whose claim key's owner did not take
	// it waits that long once).
	progress := time.Now()
	const patience = 30 * time.Second
	for w := range 4 {
		s := a
		if w%2 == 1 {
			s = b
		}
		wg.Go(func() {
			for {
				got, err := s.Claim(t.Context(), storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10 + w, Lease: time.Hour})
				if !assertNoErr(t, err) {
					return
				}
				mu.Lock()
				for _, r := range got {
					if prev, ok := owner[r.ID]; ok {
						t.Errorf("row %d claimed by claimer %d and %d", r.ID, prev, w)
					}
					owner[r.ID] = w
				}
				if len(got) > 0 {
					progress = time.Now()
				}
				n, idle := len(owner), time.Since(progress)
				mu.Unlock()
				if n == rows || idle > patience {
					return
				}
			}
		})
	}
	wg.Wait()
	if len(owner) != rows {
		// Show the rows no claimer got, with their claim keys, so that a
		// failure says what kept them.
		for _, r := range recs {
			if _, ok := owner[r.ID]; ok {
				continue
			}
			var row bson.M
			err := a.Database().Collection(mongodb.DefaultPublished).FindOne(t.Context(), bson.M{"_id": r.ID}).Decode(&row)
			t.Logf("unclaimed row %d: %v (%v)", r.ID, row, err)
			cur, err := a.Database().Collection(mongodb.DefaultClaims).Find(t.Context(), bson.M{"_id": bson.M{"$regex": fmt.Sprintf("/%d/", r.ID)}})
			if err == nil {
				var keys []bson.M
				_ = cur.All(t.Context(), &keys)
				t.Logf("  its claim keys: %v", keys)
			}
		}
	}
	require.Len(t, owner, rows, "rows claimed")
}

func assertNoErr(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// TestStaleClaimKey: a claim key whose owner did not take its row (it
// stopped between inserting the key and updating the row) keeps the row
// from other claimers while it is fresh, and no longer once it is stale.
func TestStaleClaimKey(t *testing.T) {
	c := connect(t)
	s := newStore(t, c)
	ids, err := message.NewIDGenerator(1)
	require.NoError(t, err)
	rec := &storage.Record{ID: ids.Next(), Version: "v1", Name: "stale", Content: []byte(`{}`), Status: storage.StatusScheduled}
	require.NoError(t, s.InsertPublished(t.Context(), []*storage.Record{rec}))
	got, err := s.Get(t.Context(), storage.Published, rec.ID)
	require.NoError(t, err)
	keyID := fmt.Sprintf("%s/%d/%d", storage.Published, rec.ID, got.NextAttemptAt.UnixMilli())
	keys := s.Database().Collection(mongodb.DefaultClaims)
	req := storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Hour}

	_, err = keys.InsertOne(t.Context(), bson.M{"_id": keyID, "At": time.Now().Add(-time.Second)})
	require.NoError(t, err)
	claimed, err := s.Claim(t.Context(), storage.Published, req)
	require.NoError(t, err)
	require.Empty(t, claimed, "a fresh claim key holds its row")

	_, err = keys.UpdateOne(t.Context(), bson.M{"_id": keyID}, bson.M{"$set": bson.M{"At": time.Now().Add(-30 * time.Second)}})
	require.NoError(t, err)
	claimed, err = s.Claim(t.Context(), storage.Published, req)
	require.NoError(t, err)
	require.Len(t, claimed, 1, "a stale claim key is replaced")
	require.Equal(t, rec.ID, claimed[0].ID)
	claimed, err = s.Claim(t.Context(), storage.Published, req)
	require.NoError(t, err)
	require.Empty(t, claimed, "the row is leased")
}
