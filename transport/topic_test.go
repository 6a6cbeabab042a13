package transport

import "testing"

func TestMatchCAPVectors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, topic string
		want           bool
	}{
		{"*.*.Asterisk", "AAA.BBB.Asterisk", true},
		{"*.Asterisk", "Candidates.Asterisk", true},
		{"*.*.Asterisk", "Candidates.Asterisk", false},
		{"*.Asterisk", "AAA.BBB.Asterisk", false},
		{"*.Asterisk", "Candidates.Asterisk.AAA", false},
		{"*.*.Asterisk", "AAA.BBB.CCC.Asterisk", false},
		{"*.Asterisk", "Asterisk.aaa.bbb", false},
		{"Candidates.Pound.#", "Candidates.Pound.AAA", true},
		{"Candidates.Pound.#", "Candidates.Pound.AAA.BBB", true},
		{"#.Pound", "AAA.Pound", true},
		{"#.Pound", "aaa.bbb.Pound", true},
		{"#.Pound", "Pound", false},
		{"Candidates.Pound.#", "Pound.AAA", false},
		{"#.Pound", "AAA.Pound.aaa", false},
		{"order.created", "Order.Created", true},
		{"order.created", "order.created.x", false},
	}
	for _, c := range cases {
		if got := Match(c.pattern, c.topic); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.topic, got, c.want)
		}
	}
}
