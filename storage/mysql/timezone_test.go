package mysql_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/mysql"
)

// A session time zone far from UTC changes nothing: the storage writes and
// compares UTC times, so a row inserted through a +09:00 session is due at
// once for a claimer on a -05:00 session, and its Added is now in UTC.
func TestSessionTimeZone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	connect(t)
	withZone := func(zone string) string {
		p := "time_zone=" + url.QueryEscape("'"+zone+"'")
		if strings.Contains(dsn(), "?") {
			return dsn() + "&" + p
		}
		return dsn() + "?" + p
	}
	east, err := open(withZone("+09:00"), 2)
	require.NoError(t, err)
	t.Cleanup(func() { _ = east.Close() })
	west, err := open(withZone("-05:00"), 2)
	require.NoError(t, err)
	t.Cleanup(func() { _ = west.Close() })
	var zone string
	require.NoError(t, east.QueryRow(`SELECT @@session.time_zone`).Scan(&zone))
	require.Equal(t, "+09:00", zone)

	prefix := newPrefix(t)
	se := newStore(t, east, mysql.Options{TableNamePrefix: prefix})
	sw, err := mysql.New(west, mysql.Options{TableNamePrefix: prefix})
	require.NoError(t, err)

	before := time.Now().UTC()
	r := &storage.Record{ID: 1, Version: "v1", Name: "tz", Content: []byte(`{}`), ExpiresIn: time.Hour}
	require.NoError(t, se.InsertPublished(ctx, []*storage.Record{r}))
	require.WithinDuration(t, before, r.Added, 2*time.Second, "Added is now, in UTC")
	require.Equal(t, time.UTC, r.Added.Location())
	claimed, err := sw.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Minute})
	require.NoError(t, err)
	require.Len(t, claimed, 1, "due at once on the other session")
	require.WithinDuration(t, before.Add(time.Minute), *claimed[0].NextAttemptAt, 2*time.Second)
	require.NoError(t, sw.SetOutcomes(ctx, storage.Published, []storage.Outcome{{ID: 1, Status: storage.StatusSucceeded,
		ExpiresIn: time.Microsecond}}))
	// No sleep: the next statement runs a round trip later, far past the
	// microsecond it expires in, on UTC_TIMESTAMP(6).
	n, err := se.DeleteExpired(ctx, storage.Published, 10)
	require.NoError(t, err)
	require.EqualValues(t, 1, n, "expired on the +09:00 session as soon as on UTC")
}
