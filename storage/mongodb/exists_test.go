package mongodb_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/storage"
)

// TestReceivedExistsMany: keys of several groups, the empty group among
// them, and more message ids of one group than one look-up takes, each
// answered in its place.
func TestReceivedExistsMany(t *testing.T) {
	c := connect(t)
	s := newStore(t, c)
	ids, err := message.NewIDGenerator(1)
	require.NoError(t, err)
	const stored = 600
	var recs []*storage.Record
	for i := range stored {
		recs = append(recs, &storage.Record{ID: ids.Next(), Version: "v1", Name: "many", Group: "g",
			MessageID: fmt.Sprintf("m%d", i), Content: []byte(`{}`), Status: storage.StatusScheduled})
	}
	recs = append(recs, &storage.Record{ID: ids.Next(), Version: "v1", Name: "many", Group: "",
		MessageID: "m1", Content: []byte(`{}`), Status: storage.StatusScheduled})
	ins, err := s.InsertReceivedBatch(t.Context(), recs)
	require.NoError(t, err)
	require.NotContains(t, ins, false)

	var keys []storage.ReceivedKey
	var want []bool
	for i := range 2 * stored {
		// m0..m1199 in g (the first 600 stored), then the same ids in h
		// (none stored) and in the empty group (only m1 stored).
		keys = append(keys, storage.ReceivedKey{MessageID: fmt.Sprintf("m%d", i), Group: "g"})
		want = append(want, i < stored)
		if i%100 == 1 {
			keys = append(keys, storage.ReceivedKey{MessageID: fmt.Sprintf("m%d", i), Group: "h"},
				storage.ReceivedKey{MessageID: fmt.Sprintf("m%d", i), Group: ""})
			want = append(want, false, i == 1)
		}
	}
	got, err := s.ReceivedExists(t.Context(), keys)
	require.NoError(t, err)
	require.Equal(t, want, got)
}
