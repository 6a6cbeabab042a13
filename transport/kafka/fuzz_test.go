package kafka

import (
	"bytes"
	"io"
	"maps"
	"testing"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/go-cap/cap/message"
)

// Fuzz tests of the record mapping, which reads what any producer wrote to
// a topic. Run one briefly with
//
//	go test -run '^$' -fuzz '^FuzzDecodeRecord$' -fuzztime 10s ./transport/kafka/

// splitHeaders turns fuzz bytes into record headers: fields separated by
// 0x00, taken as key and value in turn; a value of the single byte 0x01
// is a null header. Keys repeat and hold any bytes, as on the wire.
func splitHeaders(data []byte) []kafkago.Header {
	fields := bytes.Split(data, []byte{0})
	var hs []kafkago.Header
	for i := 0; i+1 < len(fields); i += 2 {
		v := fields[i+1]
		if len(v) == 1 && v[0] == 1 {
			v = nil
		}
		hs = append(hs, kafkago.Header{Key: string(fields[i]), Value: v})
	}
	return hs
}

// FuzzDecodeRecord: any record (any header keys and bytes, repeated keys,
// null headers, a tombstone) decodes without a panic into a message whose
// headers are the record's (the last of a repeated key, "" for a null
// header) and whose body is the value; the message encodes back to the
// same headers.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte("cap-msg-id\x006757258586250821633\x00cap-msg-name\x00orders.created\x00cap-callback-name\x00\x01"),
		[]byte(`{"id":1}`), false)
	f.Add([]byte("cap-msg-id\x00\xff\xfe\x00cap-msg-id\x002\x00\x00empty key"), []byte{0, 0xff}, false)
	f.Add([]byte("k\x00\x01\x00k\x00v"), []byte(nil), true)
	f.Add([]byte(""), []byte("plain text from another producer"), false)
	f.Add([]byte("x-ünï\x00välue\u2028\x00odd key without value"), []byte{}, false)
	f.Fuzz(func(t *testing.T, headers, value []byte, tombstone bool) {
		if tombstone {
			value = nil
		}
		hs := splitHeaders(headers)
		msg := decodeRecord(kafkago.Message{Topic: "t", Headers: hs, Key: []byte("k"), Value: value})
		if msg == nil || msg.Headers == nil {
			t.Fatalf("no message for headers %q", hs)
		}
		want := message.Headers{}
		for _, h := range hs {
			want[h.Key] = string(h.Value)
		}
		if !maps.Equal(msg.Headers, want) {
			t.Fatalf("headers %q, want %q", msg.Headers, want)
		}
		if !bytes.Equal(msg.Body, value) || (msg.Body == nil) != (value == nil) {
			t.Fatalf("body %q, want %q", msg.Body, value)
		}
		if again := fromHeaders(toHeaders(msg.Headers)); !maps.Equal(again, msg.Headers) {
			t.Fatalf("headers %q encode back to %q", msg.Headers, again)
		}
	})
}

// FuzzRecordRoundTrip: a message (any headers, a cap-kafka-key or not, any
// body) encoded as the record the transport sends, written as a v2 record
// batch (the produce request's format) and read back, decodes to the same
// message; the key is CAP's, and its partition is within the topic.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add("cap-msg-id", "6757258586250821633", "cap-callback-name", "", "", []byte(`{"a":1}`), uint8(3))
	f.Add("cap-msg-id", "1", "cap-kafka-key", "customer-42", "", []byte{}, uint8(1))
	f.Add("x-ünï", "välue \x00 \xff", "", "", "k", []byte{0, 0xff, 0x80}, uint8(255))
	f.Add("cap-kafka-key", "", "cap-msg-id", "", "", []byte(nil), uint8(0))
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, kafkaKey string, body []byte, partitions uint8) {
		in := &message.Message{Headers: message.Headers{k1: v1, k2: v2}, Body: body}
		if kafkaKey != "" {
			in.Headers[message.HeaderKafkaKey] = kafkaKey
		}
		key := recordKey(in)
		if want := in.Headers[message.HeaderKafkaKey]; want == "" && string(key) != in.ID() ||
			want != "" && string(key) != want {
			t.Fatalf("key %q for headers %q", key, in.Headers)
		}
		if n := int(partitions); n > 0 {
			if p := partitionFor(key, n); p < 0 || p >= n {
				t.Fatalf("partition %d of %d", p, n)
			}
		}

		var wire bytes.Buffer
		rs := protocol.RecordSet{Version: 2, Records: protocol.NewRecordReader(encodeRecord(in, key))}
		if _, err := rs.WriteTo(&wire); err != nil {
			t.Fatalf("encode: %v", err)
		}
		var back protocol.RecordSet
		if _, err := back.ReadFrom(&wire); err != nil {
			t.Fatalf("decode: %v", err)
		}
		r, err := back.Records.ReadRecord()
		if err != nil {
			t.Fatalf("read record: %v", err)
		}
		rec := kafkago.Message{Key: readBytes(t, r.Key), Value: readBytes(t, r.Value), Headers: r.Headers}
		if !bytes.Equal(rec.Key, key) {
			t.Fatalf("key %q, want %q", rec.Key, key)
		}
		out := decodeRecord(rec)
		if !maps.Equal(out.Headers, in.Headers) {
			t.Fatalf("headers %q, want %q", out.Headers, in.Headers)
		}
		if !bytes.Equal(out.Body, in.Body) {
			t.Fatalf("body %q, want %q", out.Body, in.Body)
		}
	})
}

func readBytes(t *testing.T, b protocol.Bytes) []byte {
	t.Helper()
	if b == nil {
		return nil
	}
	defer b.Close()
	out, err := io.ReadAll(b)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return out
}
