package kafka

import (
	kafkago "github.com/segmentio/kafka-go"

	"github.com/go-cap/cap/message"
)

// The mapping between messages and Kafka records, CAP's: the key is
// cap-kafka-key or cap-msg-id, the value is the body, every header is a
// record header.

// encodeRecord returns the record of m with key (recordKey(m)).
func encodeRecord(m *message.Message, key []byte) kafkago.Record {
	return kafkago.Record{
		Key:     kafkago.NewBytes(key),
		Value:   kafkago.NewBytes(m.Body),
		Headers: toHeaders(m.Headers),
	}
}

// decodeRecord returns the message of a record as read from the broker,
// whoever produced it: its headers (fromHeaders) and its value as the body
// (nil for a tombstone). Any record decodes; whether the message is one the
// bus can handle (cap-msg-id, cap-msg-name, valid UTF-8) is the bus's
// decision.
func decodeRecord(rec kafkago.Message) *message.Message {
	return &message.Message{Headers: fromHeaders(rec.Headers), Body: rec.Value}
}

// recordKey returns CAP's record key: cap-kafka-key when set, else
// cap-msg-id.
func recordKey(m *message.Message) []byte {
	if k := m.Headers[message.HeaderKafkaKey]; k != "" {
		return []byte(k)
	}
	return []byte(m.ID())
}

// toHeaders returns the record headers of a message: every header as UTF-8
// bytes, an empty value (CAP's null) as a null header.
func toHeaders(h message.Headers) []kafkago.Header {
	hs := make([]kafkago.Header, 0, len(h))
	for k, v := range h {
		var b []byte
		if v != "" {
			b = []byte(v)
		}
		hs = append(hs, kafkago.Header{Key: k, Value: b})
	}
	return hs
}

// fromHeaders returns the headers of a record; a repeated key keeps its
// last value, a null header becomes "".
func fromHeaders(hs []kafkago.Header) message.Headers {
	h := make(message.Headers, len(hs)+2)
	for _, x := range hs {
		h[x.Key] = string(x.Value)
	}
	return h
}
