package message_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-cap/cap/message"
)

// Fuzz tests of what the bus parses from other programs: cap-senttime and
// cap-delaytime in every format CAP has written, and the Content column
// (rows written by CAP or by another version of this library). Seeds are in
// testdata/fuzz; run one briefly with
//
//	go test -run '^$' -fuzz '^FuzzParseSentTime$' -fuzztime 10s ./message/

// FuzzParseSentTime: any string either fails with ErrInvalidTime or gives a
// UTC time that FormatSentTime writes and ParseSentTime reads back to the
// same second.
func FuzzParseSentTime(f *testing.F) {
	for _, s := range []string{
		"06/11/2021 20:47:21", "6/11/2021 8:47:21 PM", "6/11/2021 8:47:21 pm", "2021/6/11 20:47:21 +08:00",
		"11.06.2021 20:47:21", "2021-06-11T20:47:21.1234567Z", "Fri, 11 Jun 2021 20:47:21 +0200",
		"", " ", "yesterday", "13/13/2021 25:61:61", "02/29/2021 00:00:00", "2021-06-11T20:47:21.1234567+14:00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := message.ParseSentTime(s)
		if err != nil {
			if !errors.Is(err, message.ErrInvalidTime) {
				t.Fatalf("ParseSentTime(%q): error %v does not wrap ErrInvalidTime", s, err)
			}
			return
		}
		if got.Location() != time.UTC {
			t.Fatalf("ParseSentTime(%q) = %v, not in UTC", s, got)
		}
		if got.Year() < 1 || got.Year() > 9999 {
			return // an offset moved it out of the four-digit years the format can write
		}
		out := message.FormatSentTime(got)
		back, err := message.ParseSentTime(out)
		if err != nil {
			t.Fatalf("ParseSentTime(%q) = %v; its formatted form %q does not parse: %v", s, got, out, err)
		}
		if !back.Equal(got.Truncate(time.Second)) {
			t.Fatalf("ParseSentTime(%q) = %v; round trip through %q gives %v", s, got, out, back)
		}
	})
}

// FuzzSentTimeRoundTrip: every time of the four-digit years survives
// FormatSentTime and ParseSentTime, to the second, whatever its zone.
func FuzzSentTimeRoundTrip(f *testing.F) {
	f.Add(int64(0), int64(0), 0)
	f.Add(int64(1623444441), int64(123456789), 3600*8)
	f.Add(int64(-62135596800), int64(0), -3600)  // 0001-01-01
	f.Add(int64(253402300799), int64(999), 3600) // 9999-12-31 23:59:59
	f.Fuzz(func(t *testing.T, sec, nsec int64, offset int) {
		in := time.Unix(sec, nsec).In(time.FixedZone("fuzz", offset%(18*3600)))
		if y := in.UTC().Year(); y < 1 || y > 9999 {
			return
		}
		out := message.FormatSentTime(in)
		got, err := message.ParseSentTime(out)
		if err != nil {
			t.Fatalf("FormatSentTime(%v) = %q, which does not parse: %v", in, out, err)
		}
		if want := in.UTC().Truncate(time.Second); !got.Equal(want) {
			t.Fatalf("FormatSentTime(%v) = %q, parsed as %v, want %v", in, out, got, want)
		}
	})
}

// maxDelayDays is the last whole day a time.Duration holds.
const maxDelayDays = 106751

// FuzzParseDelay: any string either fails with ErrInvalidTime or gives a
// duration with the input's sign that FormatDelay writes in canonical form
// and ParseDelay reads back exactly.
func FuzzParseDelay(f *testing.F) {
	for _, s := range []string{
		"00:05:00", "1.00:00:00", "00:00:00.5000000", "-00:01:30", "1.02:00:00.0000001", "00:00:01.5",
		"", "5", "00:60:00", "24:00:00", "1.2.3:00:00", "00:00:00.", "00:00:00.12345678", "a:b:c", "-", "--1:00:00",
		"+00:00:01", "106750.23:59:59.9999999", "10675199.02:48:05.4775807", " 00:00:01", "00:00:-1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := message.ParseDelay(s)
		if err != nil {
			if !errors.Is(err, message.ErrInvalidTime) {
				t.Fatalf("ParseDelay(%q): error %v does not wrap ErrInvalidTime", s, err)
			}
			return
		}
		if neg := strings.HasPrefix(s, "-"); (neg && d > 0) || (!neg && d < 0) {
			t.Fatalf("ParseDelay(%q) = %v: the sign changed", s, d)
		}
		out := message.FormatDelay(d)
		back, err := message.ParseDelay(out)
		if err != nil {
			t.Fatalf("ParseDelay(%q) = %v; its formatted form %q does not parse: %v", s, d, out, err)
		}
		if back != d {
			t.Fatalf("ParseDelay(%q) = %v; round trip through %q gives %v", s, d, out, back)
		}
	})
}

// FuzzDelayRoundTrip: every duration survives FormatDelay and ParseDelay to
// the .NET tick (100 ns).
func FuzzDelayRoundTrip(f *testing.F) {
	for _, d := range []time.Duration{0, 1, 99, 100, 5 * time.Minute, -90 * time.Second, 24 * time.Hour,
		26*time.Hour + 100, maxDelayDays * 24 * time.Hour} {
		f.Add(int64(d))
	}
	f.Fuzz(func(t *testing.T, n int64) {
		d := time.Duration(n)
		if d == time.Duration(-1<<63) {
			return // its magnitude is not a Duration; a delay is never near it
		}
		out := message.FormatDelay(d)
		got, err := message.ParseDelay(out)
		if err != nil {
			t.Fatalf("FormatDelay(%d) = %q, which does not parse: %v", n, out, err)
		}
		if want := d / 100 * 100; got != want {
			t.Fatalf("FormatDelay(%d) = %q, parsed as %d, want %d", n, out, int64(got), int64(want))
		}
	})
}

// FuzzDecodeContent: any bytes either fail with ErrInvalidContent or give
// a message that EncodeContent writes as valid JSON and DecodeContent reads
// back unchanged.
func FuzzDecodeContent(f *testing.F) {
	for _, s := range []string{
		`{"Headers":{"cap-callback-name":null,"cap-msg-id":"6757258586250821633","cap-corr-id":"6757258586250821633","cap-corr-seq":"0","cap-msg-name":"CustomerRechargedEvent","cap-msg-type":"CustomerRechargedEvent","cap-senttime":"03/23/2025 19:26:26"},"Value":{"CustomerId":42,"Amount":12.5,"Note":"\u81EA\u0026"}}`,
		`{"Headers":{},"Value":null}`,
		`{"Headers":{"cap-msg-type":"Blob"},"Value":"data:Blob;base64,AAEC/25vdCBq"}`,
		`{"Headers":{"a":"b"},"Value":"data:Blob;base64,not base64"}`,
		`{"Headers":{"a":"b"},"Value":[1,"two",{"three":3.0}]}`,
		`{"Headers":{"a":"b"}}`,
		`{"headers":{"a":"b"},"value":1}`,
		`{"Headers":{"a":1},"Value":1}`,
		`{"Headers":null,"Value":1}`,
		``, `{`, `[]`, `null`, `{"Value":1}`, `{"Headers":{"a":"\ud800"},"Value":"\udfff"}`,
		`{"Headers":{"go-cap-body":"x"},"Value":1}`, `{"Headers":{"go-cap-body":"x"},"Value":null}`,
		`{"Headers":{"go-cap-body":""}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := message.DecodeContent(data)
		if err != nil {
			if !errors.Is(err, message.ErrInvalidContent) {
				t.Fatalf("DecodeContent(%q): error %v does not wrap ErrInvalidContent", data, err)
			}
			return
		}
		if m.Headers == nil {
			t.Fatalf("DecodeContent(%q): nil headers", data)
		}
		enc, err := message.EncodeContent(m)
		if err != nil {
			t.Fatalf("EncodeContent of DecodeContent(%q): %v", data, err)
		}
		if !json.Valid(enc) {
			t.Fatalf("EncodeContent of DecodeContent(%q) is not JSON: %q", data, enc)
		}
		again, err := message.DecodeContent(enc)
		if err != nil {
			t.Fatalf("DecodeContent(%q) re-encoded as %q, which does not decode: %v", data, enc, err)
		}
		requireSameMessage(t, m, again, "DecodeContent(%q) re-encoded as %q", data, enc)
	})
}

// reservedHeader is the header EncodeContent keeps for itself.
const reservedHeader = "go-cap-body"

// FuzzContentRoundTrip: a message with any headers and any body survives
// EncodeContent and DecodeContent. Header keys and values are text, as on
// every broker; the body is any bytes.
func FuzzContentRoundTrip(f *testing.F) {
	f.Add("cap-msg-id", "6757258586250821633", "cap-callback-name", "", []byte(`{"n":1}`))
	f.Add("cap-msg-type", "Blob", "x-ünï", `välue "q"`, []byte{0, 1, 2, 0xff, 'n', 'o', 't'})
	f.Add("cap-msg-name", "order.created", "cap-exception", "SubscriberExecutionFailedException-->boom", []byte(`"a plain string"`))
	f.Add("k", "v", "k2", "v2", []byte(nil))
	f.Add("k", "v", "k2", "v2", []byte(`[1, 2 ,3]`))
	f.Add("k", "v", "k2", "v2", []byte("\t{}\n"))
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string, body []byte) {
		for _, h := range []string{k1, v1, k2, v2} {
			if !utf8.ValidString(h) {
				return // headers are text
			}
		}
		if k1 == reservedHeader || k2 == reservedHeader {
			return
		}
		in := &message.Message{Headers: message.Headers{k1: v1, k2: v2}, Body: body}
		enc, err := message.EncodeContent(in)
		if err != nil {
			t.Fatalf("EncodeContent(%q, %q): %v", in.Headers, body, err)
		}
		if !json.Valid(enc) {
			t.Fatalf("EncodeContent(%q, %q) is not JSON: %q", in.Headers, body, enc)
		}
		// Storages keep Content in text columns.
		if !utf8.Valid(enc) {
			t.Fatalf("EncodeContent(%q, %q) is not UTF-8: %q", in.Headers, body, enc)
		}
		out, err := message.DecodeContent(enc)
		if err != nil {
			t.Fatalf("EncodeContent(%q, %q) = %q, which does not decode: %v", in.Headers, body, enc, err)
		}
		requireSameMessage(t, in, out, "EncodeContent(%q, %q) = %q", in.Headers, body, enc)
	})
}

// requireSameMessage fails unless a and b have the same headers and bodies
// that mean the same: equal bytes, or JSON that differs only in the
// whitespace around it, or an empty body and JSON null (CAP's null value).
func requireSameMessage(t *testing.T, a, b *message.Message, format string, args ...any) {
	t.Helper()
	if len(a.Headers) != len(b.Headers) {
		t.Fatalf(format+": headers %q, then %q", append(args, a.Headers, b.Headers)...)
	}
	for k, v := range a.Headers {
		if w, ok := b.Headers[k]; !ok || w != v {
			t.Fatalf(format+": headers %q, then %q", append(args, a.Headers, b.Headers)...)
		}
	}
	if !sameBody(a.Body, b.Body) {
		t.Fatalf(format+": body %q, then %q", append(args, a.Body, b.Body)...)
	}
}

func sameBody(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	if !json.Valid(a) {
		return false // a body that is not JSON comes back byte for byte
	}
	norm := func(p []byte) []byte {
		p = bytes.TrimSpace(p)
		if bytes.Equal(p, []byte("null")) {
			return nil
		}
		return p
	}
	return bytes.Equal(norm(a), norm(b))
}
