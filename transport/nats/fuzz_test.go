package nats

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/go-cap/cap/transport"
)

// Any topic either maps to a subject in its own stream whose NATS match
// includes every topic CAP's rule matches, or is refused with
// ErrInvalidTopic; and merging it into a stream's subjects keeps every
// subject captured with no two intersecting.
func FuzzBindAndMerge(f *testing.F) {
	for _, s := range []string{"orders.created", "p.log.#", "p.*.created", "a.#.b", "x", "*.x", "a..b", "a.>", "p.a.b", "p.*"} {
		f.Add(s, "p.a.b")
	}
	f.Fuzz(func(t *testing.T, topic, probe string) {
		b, err := bind("g", topic)
		if err != nil {
			return
		}
		if b.stream != StreamName(topic) || strings.ContainsAny(b.stream, "*>#. ") {
			t.Fatalf("stream %q of %q", b.stream, topic)
		}
		// A message name that is not valid UTF-8 never reaches a handler (the
		// bus stores it Failed), so only valid names are probed. CAP matches an
		// exact name regardless of case; NATS subjects are case-sensitive (a
		// documented limit), so names that differ only in case are left out.
		if utf8.ValidString(probe) && transport.Match(topic, probe) && !transport.IsWildcard(probe) &&
			!strings.EqualFold(probe, topic) {
			// CAP's rule matches probe: NATS must deliver it.
			if !covers(b.subject, probe) {
				t.Fatalf("subject %q of %q does not deliver %q, which CAP's rule matches", b.subject, topic, probe)
			}
		}
		if !b.filter && b.subject != topic {
			t.Fatalf("unfiltered %q maps to %q", topic, b.subject)
		}
		have := []string{b.stream + ".a", b.stream + ".*.c", b.stream}
		pb, err := bind("g", probe)
		want := []string{b.subject}
		if err == nil && pb.stream == b.stream {
			want = append(want, pb.subject)
		}
		got, _ := mergeSubjects(have, want)
		for _, s := range append(have, want...) {
			found := false
			for _, g := range got {
				found = found || covers(g, s)
			}
			if !found {
				t.Fatalf("%s not captured by %v", s, got)
			}
		}
		for i := range got {
			for j := i + 1; j < len(got); j++ {
				if intersects(got[i], got[j]) {
					t.Fatalf("%s and %s intersect in %v", got[i], got[j], got)
				}
			}
		}
	})
}
