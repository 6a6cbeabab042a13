package nats

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/transport"
)

func TestBind(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		topic, subject, stream string
		filter                 bool
	}{
		{"orders.created", "orders.created", "orders", false},
		{"orders", "orders", "orders", false},
		{"orders.*.created", "orders.*.created", "orders", true},
		{"p.log.#", "p.log.>", "p", true},
		{"p.#.created", "p.>", "p", true},
		{"p.*.x.#", "p.*.x.>", "p", true},
	} {
		b, err := bind("cap.queue.app.v1", c.topic)
		require.NoError(t, err, c.topic)
		require.Equal(t, c.subject, b.subject, c.topic)
		require.Equal(t, c.stream, b.stream, c.topic)
		require.Equal(t, c.filter, b.filter, c.topic)
	}
	for _, bad := range []string{"", "*.created", "#.Pound", "a..b", "a.", ".a", "a b.c", "a.>", "a\tb", "o*s.x", "a/b.c"} {
		_, err := bind("g", bad)
		require.ErrorIs(t, err, ErrInvalidTopic, "%q", bad)
	}
}

// CAP's names (reference 5.3): durable = Normalized(Normalized(group) + "-"
// + subject), with '>', '.', ' ' and '*' as '_'.
func TestDurableName(t *testing.T) {
	t.Parallel()
	require.Equal(t, "cap_queue_billing_v1-orders_created", DurableName("cap.queue.billing.v1", "orders.created"))
	require.Equal(t, "g_1-orders____", DurableName("g 1", "orders.*.>"))
	require.Equal(t, "orders", StreamName("orders.created"))
	require.Equal(t, "orders", StreamName("orders"))
}

func TestCoversIntersects(t *testing.T) {
	t.Parallel()
	require.True(t, covers("p.>", "p.a.b"))
	require.True(t, covers("p.>", "p.*"))
	require.False(t, covers("p.>", "p"))
	require.True(t, covers("p.*", "p.a"))
	require.False(t, covers("p.a", "p.*"))
	require.False(t, covers("p.*", "p.>"))
	require.True(t, covers("p.a.b", "p.a.b"))
	require.True(t, intersects("p.*.created", "p.log.>"))
	require.False(t, intersects("p.log", "p.log.>"))
	require.False(t, intersects("p.a.created", "p.b.created"))
	require.True(t, intersects("p.*.c", "p.a.*"))
}

func TestMergeSubjects(t *testing.T) {
	t.Parallel()
	got, changed := mergeSubjects([]string{"p.a"}, []string{"p.a"})
	require.False(t, changed)
	require.Equal(t, []string{"p.a"}, got)

	got, changed = mergeSubjects([]string{"p.a", "q.b"}, []string{"p.b"})
	require.True(t, changed)
	require.Equal(t, []string{"p.a", "q.b", "p.b"}, got, "extended, never replaced")

	got, _ = mergeSubjects([]string{"p.a.created", "p.log"}, []string{"p.*.created"})
	require.Equal(t, []string{"p.log", "p.*.created"}, got)

	got, _ = mergeSubjects([]string{"p.*.created", "p.log"}, []string{"p.log.>"})
	require.Equal(t, []string{"p.>"}, got)

	// Whatever the merge does, every subject asked for stays captured and
	// no two subjects intersect.
	have := []string{"p", "p.a", "p.a.b", "p.*.c", "p.x.>"}
	want := []string{"p.*.b", "p.q.>", "p.a.*", "p.z"}
	got, _ = mergeSubjects(have, want)
	for _, s := range append(have, want...) {
		found := false
		for _, g := range got {
			found = found || covers(g, s)
		}
		require.True(t, found, "%s not captured by %v", s, got)
	}
	for i := range got {
		for j := i + 1; j < len(got); j++ {
			require.False(t, intersects(got[i], got[j]), "%s and %s intersect", got[i], got[j])
		}
	}
}

// The mapping agrees with CAP's rule: a topic the subject matches by NATS's
// rule and the topic matches by CAP's is delivered; the consumer filters
// the rest.
func TestFilterAgreesWithCAP(t *testing.T) {
	t.Parallel()
	b, err := bind("g", "p.log.#")
	require.NoError(t, err)
	require.True(t, covers(b.subject, "p.log.a.b"))
	require.False(t, covers(b.subject, "p.log"), "NATS's > needs a word: p.log is not delivered")
	require.False(t, transport.Match(b.topic, "p.log.a-b"), "the consumer drops what CAP's # does not match")
}
