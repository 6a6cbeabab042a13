package message

import (
	"bytes"
	"encoding/json"
	"maps"
	"strings"
	"testing"
)

// The fast paths of jsonscan.go against encoding/json, their reference.

var jsonSeeds = []string{
	``, ` `, `null`, `true`, `false`, `nul`, `truex`, `0`, `-0`, `01`, `-`, `1.`, `1.5`, `1e5`, `1E+5`, `1e-`,
	`-12.5e-3`, `""`, `"a"`, `"\u00e9\n\"\\\/"`, `"\x"`, `"\u12g4"`, "\"\x01\"", "\"\xff\xfe\"", `"unterminated`,
	`{}`, `[]`, `{"a":1}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{"a" 1}`, `{1:2}`, ` {"a" : [ 1 , {"b":null} ] } `,
	`{"seq":123456,"pad":"xxxxxxxx"}`, `[[[[[[]]]]]]`, `{"a":1}}`, `1 2`, strings.Repeat("[", 1200) + strings.Repeat("]", 1200),
}

// FuzzValidJSON: validJSON agrees with json.Valid, but for values nested
// deeper than it follows (which it leaves to json.Valid).
func FuzzValidJSON(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ref := validJSON(b), json.Valid(b)
		if fast && !ref {
			t.Fatalf("validJSON(%q) = true, json.Valid = false", b)
		}
		if !fast && ref && bytes.Count(b, []byte("["))+bytes.Count(b, []byte("{")) <= maxDepth {
			t.Fatalf("validJSON(%q) = false, json.Valid = true", b)
		}
	})
}

// FuzzAppendString: appendString writes what json.Marshal writes.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "cap-msg-id", "a\"b", `a\b`, "<&>", "é", "\u2028", "\xff", "\x00", "tab\there"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Fatalf("appendString(%q) = %s, json.Marshal = %s", s, got[1:], want)
		}
	})
}

// FuzzParseContent: where parseContent reads a Content, encoding/json reads
// the same headers and value; parseContent reads what EncodeContent writes.
func FuzzParseContent(f *testing.F) {
	for _, s := range []string{
		`{"Headers":{},"Value":null}`,
		`{"Headers":{"cap-msg-id":"1","cap-callback-name":null},"Value":{"a":[1,2]}}`,
		`{"Headers":{"a":"1","a":null},"Value":1}`,
		`{"Headers":{"k":"v\n"},"Value":1}`,
		`{"Headers":{"k":"\xff"},"Value":1}`,
		`{"Headers":{"k":1},"Value":1}`,
		`{"Headers":{},"Value":1,"Value":2}`,
		`{"Headers":{},"Value": "x" }`,
		`{"Value":1,"Headers":{}}`,
		`{"headers":{},"value":1}`,
		`{"Headers":{"k":"v"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, v, ok := parseContent(data)
		if !ok {
			return
		}
		var c content
		if err := json.Unmarshal(data, &c); err != nil {
			t.Fatalf("parseContent read %q, encoding/json: %v", data, err)
		}
		if !maps.EqualFunc(h, c.Headers, func(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }) {
			t.Fatalf("headers of %q: parseContent %v, encoding/json %v", data, h, c.Headers)
		}
		if !bytes.Equal(bytes.TrimSpace(v), bytes.TrimSpace(c.Value)) {
			t.Fatalf("value of %q: parseContent %q, encoding/json %q", data, v, c.Value)
		}
	})
}

// TestParseContentReadsEncodeContent: the fast path takes what
// EncodeContent writes, so a claimed row is not decoded by encoding/json.
func TestParseContentReadsEncodeContent(t *testing.T) {
	for _, m := range []*Message{
		{Headers: Headers{HeaderMessageID: "1", HeaderMessageName: "t", HeaderCallbackName: ""}, Body: []byte(`{"seq":1,"pad":"xx"}`)},
		{Headers: Headers{HeaderMessageID: "2", HeaderMessageName: "t"}, Body: nil},
		{Headers: Headers{HeaderMessageID: "3", HeaderMessageName: "t", HeaderType: "T"}, Body: []byte{0xff, 0}},
		{Headers: Headers{}, Body: []byte(`"s"`)},
	} {
		enc, err := EncodeContent(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok := parseContent(enc); !ok {
			t.Errorf("parseContent does not read %s", enc)
		}
	}
}
