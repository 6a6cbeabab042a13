package transport

import "strings"

// Match reports whether topic matches pattern with CAP's semantics: an exact
// name matches case-insensitively; '*' stands for exactly one word of
// [0-9a-zA-Z]+ and '#' for one or more words, dots included.
func Match(pattern, topic string) bool {
	if strings.EqualFold(pattern, topic) {
		return true
	}
	if !IsWildcard(pattern) {
		return false
	}
	return matchWords(strings.Split(pattern, "."), strings.Split(topic, "."))
}

// IsWildcard reports whether pattern holds '*' or '#'.
func IsWildcard(pattern string) bool { return strings.ContainsAny(pattern, "*#") }

func matchWords(p, t []string) bool {
	if len(p) == 0 {
		return len(t) == 0
	}
	switch p[0] {
	case "*":
		return len(t) > 0 && isWord(t[0]) && matchWords(p[1:], t[1:])
	case "#":
		// one or more words
		for n := 1; n <= len(t); n++ {
			if !isWord(t[n-1]) {
				return false
			}
			if matchWords(p[1:], t[n:]) {
				return true
			}
		}
		return false
	default:
		return len(t) > 0 && p[0] == t[0] && matchWords(p[1:], t[1:])
	}
}

func isWord(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}
