package redis

import (
	"bytes"
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/go-cap/cap/message"
)

// Fuzz tests of the entry decoding, which reads what other programs wrote
// to a stream. Seeds are in testdata/fuzz; run one briefly with
//
//	go test -run '^$' -fuzz '^FuzzDecodeEntry$' -fuzztime 10s ./transport/redis/

// FuzzDecodeEntry: any fields decode without a panic into either a message
// (CAP's fields) or a malformed delivery that keeps both raw fields and
// wraps ErrMalformed; an entry without a headers field has no headers.
func FuzzDecodeEntry(f *testing.F) {
	f.Add(`{"cap-msg-id":"1","cap-msg-name":"a.b","cap-callback-name":null}`, `"eyJhIjoxfQ=="`, true, true)
	f.Add(`{"cap-msg-id":1,"x":{"y":[true,null]}}`, `""`, true, true)
	f.Add(`{"cap-msg-id":"1",`, `"e30="`, true, true)
	f.Add(`[1]`, `not json`, true, true)
	f.Add(`null`, `null`, true, false)
	f.Add(``, `{"plain":"json"}`, false, true)
	f.Add(`{"a":"\u00e9\ud83d\ude80"} trailing`, `"!!!"`, true, true)
	f.Fuzz(func(t *testing.T, headers, body string, hasHeaders, hasBody bool) {
		values := map[string]any{"other": "x"}
		if hasHeaders {
			values[fieldHeaders] = headers
		}
		if hasBody {
			values[fieldBody] = body
		}
		msg, err := decodeEntry("1-0", values)
		if msg == nil || msg.Headers == nil {
			t.Fatalf("decodeEntry(%q, %q) gave no message", headers, body)
		}
		if !hasHeaders {
			if err != nil || len(msg.Headers) != 0 {
				t.Fatalf("an entry without headers: %v, %v", msg.Headers, err)
			}
			return
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if msg.Headers[HeaderRawHeaders] != headers || msg.Headers[HeaderError] == "" ||
				msg.Headers[HeaderEntryID] != "1-0" || msg.ID() != "" {
				t.Fatalf("malformed delivery lost something: %q", msg.Headers)
			}
			if hasBody && string(msg.Body) != body {
				t.Fatalf("raw body %q, want %q", msg.Body, body)
			}
			return
		}
		// A decoded entry encodes back to fields that decode the same.
		again, err := decodeEntry("1-0", map[string]any{
			fieldHeaders: encodeHeaders(msg.Headers), fieldBody: encodeBody(msg.Body)})
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		requireSame(t, msg, again)
	})
}

// FuzzEntryRoundTrip: any headers and body survive the encoding this
// transport writes; an empty value (CAP's null) included.
func FuzzEntryRoundTrip(f *testing.F) {
	f.Add("cap-msg-id", "6757258586250821633", "cap-callback-name", "", []byte(`{"a":1}`))
	f.Add("x-ünï", "välue \"q\" \x00 <&>", "k", "\u2028", []byte{0, 0xff, 0x80})
	f.Add("", "", "b", "c", []byte{})
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string, body []byte) {
		in := &message.Message{Headers: message.Headers{k1: v1, k2: v2}, Body: body}
		out, err := decodeEntry("1-0", map[string]any{fieldHeaders: encodeHeaders(in.Headers), fieldBody: encodeBody(in.Body)})
		if err != nil {
			t.Fatalf("encoded %q does not decode: %v", in.Headers, err)
		}
		requireSame(t, in, out)
	})
}

func requireSame(t *testing.T, want, got *message.Message) {
	t.Helper()
	if !bytes.Equal(want.Body, got.Body) {
		t.Fatalf("body %q, want %q", got.Body, want.Body)
	}
	if len(want.Headers) < len(got.Headers) {
		t.Fatalf("headers %q, want %q", got.Headers, want.Headers)
	}
	for k, v := range want.Headers {
		// encoding/json replaces invalid UTF-8 with U+FFFD, as
		// System.Text.Json refuses it: compare what JSON can carry.
		// Keys that are not UTF-8 all become U+FFFD and may collide.
		if !utf8.ValidString(k) {
			continue
		}
		if w, ok := got.Headers[k]; !ok || w != v && w != toValidUTF8(v) {
			t.Fatalf("headers %q, want %q", got.Headers, want.Headers)
		}
	}
}
