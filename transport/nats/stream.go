package nats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/go-cap/cap/transport"
)

// binding is one subscribed topic mapped to JetStream.
type binding struct {
	topic   string // the topic as subscribed, with CAP's wildcards
	subject string // the NATS filter subject
	stream  string // the stream: the topic's first word
	durable string // CAP's durable consumer name
	// filter: the NATS subject matches more than the topic by CAP's rule
	// (NATS's * is any word, CAP's only [0-9a-zA-Z]+; a # before the last
	// word), so the consumer checks each delivery with transport.Match.
	filter bool
}

// StreamName returns the stream a topic belongs to: its first word, CAP's
// NormalizeStreamName ("orders.created" is in stream "orders").
func StreamName(topic string) string {
	name, _, _ := strings.Cut(topic, ".")
	return name
}

// DurableName returns CAP's name of the durable consumer of group for
// topic: group and topic joined by "-", with '.', '*', '>' and spaces
// replaced by '_'.
func DurableName(group, topic string) string {
	return normalize(normalize(group) + "-" + topic)
}

func normalize(s string) string {
	return strings.NewReplacer(">", "_", ".", "_", " ", "_", "*", "_").Replace(s)
}

// Subject returns the NATS subject of a topic: the topic itself, with
// CAP's '#' (one or more words) as NATS's '>' and everything after it
// dropped. It fails with ErrInvalidTopic for topics NATS cannot take.
func Subject(topic string) (string, error) {
	b, err := bind("", topic)
	return b.subject, err
}

// bind maps topic for group, validating it.
func bind(group, topic string) (binding, error) {
	invalid := func(why string) (binding, error) {
		return binding{}, fmt.Errorf("%w %q: %s", ErrInvalidTopic, topic, why)
	}
	if topic == "" {
		return invalid("empty")
	}
	if !utf8.ValidString(topic) {
		return invalid("not valid UTF-8")
	}
	if strings.ContainsFunc(topic, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return invalid("white space or control characters")
	}
	words := strings.Split(topic, ".")
	first := words[0]
	if first == "*" || first == "#" {
		return invalid("a wildcard first word: the first word names the stream")
	}
	if strings.ContainsAny(first, `*>#/\`) {
		return invalid("the first word names the stream and cannot hold * > # / \\")
	}
	out := make([]string, 0, len(words))
	filter := false
	for _, w := range words {
		switch w {
		case "":
			return invalid("an empty word")
		case ">":
			return invalid("NATS's '>' is not a CAP wildcard; use '#'")
		case "*":
			filter = true
			out = append(out, "*")
			continue
		case "#":
			// NATS's > is one or more words of any kind, CAP's # one or
			// more [0-9a-zA-Z]+ words; the words after it are checked by
			// the consumer too.
			out = append(out, ">")
			filter = true
		default:
			out = append(out, w)
			continue
		}
		break
	}
	return binding{
		topic:   topic,
		subject: strings.Join(out, "."),
		stream:  first,
		durable: DurableName(group, topic),
		filter:  filter,
	}, nil
}

// covers reports whether NATS subject pattern a matches every subject that
// pattern b matches.
func covers(a, b string) bool {
	ta, tb := strings.Split(a, "."), strings.Split(b, ".")
	for i, w := range ta {
		if w == ">" {
			return len(tb) > i
		}
		if i >= len(tb) || tb[i] == ">" {
			return false
		}
		if w != "*" && w != tb[i] {
			return false
		}
	}
	return len(ta) == len(tb)
}

// intersects reports whether some subject matches both NATS subject
// patterns a and b.
func intersects(a, b string) bool {
	ta, tb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(ta) && i < len(tb); i++ {
		if ta[i] == ">" || tb[i] == ">" {
			return true
		}
		if ta[i] != "*" && tb[i] != "*" && ta[i] != tb[i] {
			return false
		}
	}
	return len(ta) == len(tb)
}

// generalize returns a NATS subject pattern that covers a and b, as narrow
// as a simple rule finds: word by word with * where they differ when both
// have the same number of words and no '>', else their common leading
// words followed by '>'. Both share their first word (the stream), and
// neither is the bare first word when they intersect without one covering
// the other, so the result is never wider than "{stream}.>".
func generalize(a, b string) string {
	ta, tb := strings.Split(a, "."), strings.Split(b, ".")
	if len(ta) == len(tb) && !slices.Contains(ta, ">") && !slices.Contains(tb, ">") {
		out := make([]string, len(ta))
		for i := range ta {
			out[i] = ta[i]
			if ta[i] != tb[i] {
				out[i] = "*"
			}
		}
		return strings.Join(out, ".")
	}
	k := 0
	for k < len(ta) && k < len(tb) && ta[k] == tb[k] && ta[k] != ">" {
		k++
	}
	k = max(1, min(k, len(ta)-1, len(tb)-1))
	return strings.Join(append(slices.Clone(ta[:k]), ">"), ".")
}

// mergeSubjects returns have extended by want. A subject of want that a
// subject of have covers is not added; subjects of have that a new one
// covers are dropped (the new one captures all they did). JetStream refuses
// subjects of one stream that intersect, so a new subject that intersects
// an old one without covering it is widened until it covers both (see
// generalize): the stream may then capture more subjects than anyone
// subscribed, never fewer. It reports whether anything changed.
func mergeSubjects(have, want []string) ([]string, bool) {
	out := slices.Clone(have)
	changed := false
	for _, w := range want {
		if slices.ContainsFunc(out, func(h string) bool { return covers(h, w) }) {
			continue
		}
		changed = true
		for {
			out = slices.DeleteFunc(out, func(h string) bool { return covers(w, h) })
			i := slices.IndexFunc(out, func(h string) bool { return intersects(h, w) })
			if i < 0 {
				out = append(out, w)
				break
			}
			w = generalize(w, out[i])
		}
	}
	return out, changed
}

// ensureStream makes sure stream captures subjects: it creates the stream
// or extends its subject list, never taking a subject away that is not
// covered by a new one, so services sharing a stream do not unbind each
// other (CAP's update replaces the list).
func (t *Transport) ensureStream(ctx context.Context, stream string, subjects []string) error {
	t.streamMu.Lock()
	defer t.streamMu.Unlock()
	// Another service may change the stream between the read and the
	// update (JetStream has no conditional update): the update is checked
	// and done again on a lost race.
	for attempt := 0; ; attempt++ {
		if attempt > 5 {
			return fmt.Errorf("nats: stream %q: its subjects keep changing under the update", stream)
		}
		s, err := t.js.Stream(ctx, stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			if t.cfg.NoStreamCreation {
				return fmt.Errorf("nats: stream %q does not exist and Config.NoStreamCreation is set", stream)
			}
			cfg := jetstream.StreamConfig{
				Name:     stream,
				Subjects: subjects,
				Storage:  t.cfg.Storage,
				Replicas: t.cfg.Replicas,
			}
			if t.cfg.StreamConfig != nil {
				t.cfg.StreamConfig(&cfg)
				cfg.Name = stream
				cfg.Subjects, _ = mergeSubjects(cfg.Subjects, subjects)
			}
			_, err = t.js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && attempt < 5 {
				continue // created meanwhile by another service
			}
			if err != nil {
				return t.classify(ctx, "create stream "+stream, err)
			}
			t.log.Debug("nats: created stream", "stream", stream, "subjects", subjects, "storage", cfg.Storage.String())
			return nil
		}
		if err != nil {
			return t.classify(ctx, "stream info "+stream, err)
		}
		cfg := s.CachedInfo().Config
		merged, changed := mergeSubjects(cfg.Subjects, subjects)
		if !changed {
			return nil
		}
		if t.cfg.NoStreamCreation {
			return fmt.Errorf("nats: stream %q does not capture %v and Config.NoStreamCreation is set", stream, subjects)
		}
		cfg.Subjects = merged
		if _, err := t.js.UpdateStream(ctx, cfg); err != nil {
			if attempt < 5 && !errors.Is(err, transport.ErrUnavailable) {
				var apiErr *jetstream.APIError
				// 10058: the stream changed under us ("stream name already
				// in use with a different configuration") is not expected
				// from an update; anything else is final.
				if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamNameInUse {
					continue
				}
			}
			return t.classify(ctx, "extend the subjects of stream "+stream, err)
		}
		t.log.Debug("nats: extended stream", "stream", stream, "subjects", merged)
	}
}
