package nodeinfo

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
)

func TestRoundTrip(t *testing.T) {
	started := time.Date(2026, 12, 3, 8, 30, 0, 123456000, time.UTC)
	seen := started.Add(time.Minute)
	n := storage.Node{ID: "orders-1/42", Name: "orders-1", Host: "db-host", Version: "v1.2.3", Started: started}
	got, ok := Decode(Key(n.ID), Instance(n), seen)
	require.True(t, ok)
	n.LastSeen = seen
	require.Equal(t, n, got)
}

// Long and multi-byte names are cut to the columns on a rune boundary,
// and the row still decodes.
func TestClipped(t *testing.T) {
	n := storage.Node{ID: strings.Repeat("é", 100), Name: strings.Repeat("名", 200), Host: strings.Repeat("h", 300),
		Version: strings.Repeat("v", 60), Started: time.Unix(1, 0).UTC()}
	key, inst := Key(n.ID), Instance(n)
	require.LessOrEqual(t, len(key), maxKey)
	require.LessOrEqual(t, len(inst), maxInstance)
	require.True(t, utf8.ValidString(key) && utf8.ValidString(inst))
	got, ok := Decode(key, inst, time.Unix(2, 0))
	require.True(t, ok)
	require.True(t, strings.HasPrefix(n.ID, got.ID))
	require.True(t, strings.HasPrefix(n.Name, got.Name) && got.Name != "")
	require.True(t, strings.HasPrefix(n.Host, got.Host) && got.Host != "")
	require.Equal(t, n.Started, got.Started)
	require.Equal(t, Key(n.ID), Key(got.ID), "a clipped id names the same row")
}

func TestNotANode(t *testing.T) {
	for _, c := range [][2]string{
		{"publish_retry_v1", "orders-1"},                 // CAP's own lock
		{KeyPrefix + "x", "no separators"},               // foreign text
		{KeyPrefix + "x", "a\x1fb\x1fc\x1fnot-a-number"}, // bad start time
	} {
		_, ok := Decode(c[0], c[1], time.Now())
		require.False(t, ok, "%q", c)
	}
}
