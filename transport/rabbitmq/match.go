package rabbitmq

import (
	"strings"

	"github.com/go-cap/cap/transport"
)

// wanted reports whether a consumer subscribed to patterns should pass on a
// delivery with this routing key. RabbitMQ's wildcards are more generous
// than CAP's (its # also matches zero words, its * any word, not only
// [0-9a-zA-Z]+), so a delivery that one of the patterns routed by
// RabbitMQ's rule but none matches by CAP's is not wanted. A delivery that
// none of the patterns routes at all came through a binding of another
// consumer of the group (or one a former version of the service left): it
// is passed on, for the bus to decide.
func wanted(patterns []string, routingKey string) bool {
	routed := false
	for _, p := range patterns {
		if transport.Match(p, routingKey) {
			return true
		}
		if !routed && amqpMatch(p, routingKey) {
			routed = true
		}
	}
	return !routed
}

// amqpMatch reports whether a topic exchange routes key through a binding
// with pattern: words are separated by dots, * is exactly one word and # is
// zero or more words; matching is case-sensitive.
func amqpMatch(pattern, key string) bool {
	return amqpWords(strings.Split(pattern, "."), strings.Split(key, "."))
}

func amqpWords(p, k []string) bool {
	for len(p) > 0 {
		switch p[0] {
		case "#":
			for n := 0; n <= len(k); n++ {
				if amqpWords(p[1:], k[n:]) {
					return true
				}
			}
			return false
		case "*":
			if len(k) == 0 {
				return false
			}
		default:
			if len(k) == 0 || p[0] != k[0] {
				return false
			}
		}
		p, k = p[1:], k[1:]
	}
	return len(k) == 0
}
