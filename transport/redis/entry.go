package redis

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/go-cap/cap/message"
)

// Entry field names, CAP's.
const (
	fieldHeaders = "headers"
	fieldBody    = "body"
)

// Headers of a delivery made from a malformed entry. They carry the decode
// error and the entry's raw fields, so that the Failed row the bus stores
// for it keeps everything the entry held.
const (
	// HeaderError holds why the entry could not be decoded.
	HeaderError = "redis-error"
	// HeaderEntryID holds the entry's stream id.
	HeaderEntryID = "redis-entry-id"
	// HeaderRawHeaders holds the entry's headers field as it was.
	HeaderRawHeaders = "redis-headers"
)

// ErrMalformed reports an entry whose headers field is not a JSON object
// or whose body field is not a base64 JSON string. Delivery.Err wraps it.
var ErrMalformed = errors.New("redis: malformed stream entry")

// encodeHeaders returns the headers field of a message: a JSON object of
// every header, an empty value (CAP's null) as null.
func encodeHeaders(h message.Headers) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		writeJSONString(&b, k)
		b.WriteByte(':')
		if v := h[k]; v == "" {
			b.WriteString("null")
		} else {
			writeJSONString(&b, v)
		}
	}
	b.WriteByte('}')
	return b.String()
}

func writeJSONString(b *strings.Builder, s string) {
	enc, _ := json.Marshal(s) // a string always marshals
	b.Write(enc)
}

// encodeBody returns the body field: the body as a base64 JSON string, as
// System.Text.Json writes a byte array ("" for an empty body).
func encodeBody(body []byte) string {
	out := make([]byte, 0, base64.StdEncoding.EncodedLen(len(body))+2)
	out = append(out, '"')
	out = base64.StdEncoding.AppendEncode(out, body)
	return string(append(out, '"'))
}

// decodeHeaders parses a headers field. Values that are not strings, which
// producers that do not speak CAP may write, become their JSON text; null
// becomes "".
func decodeHeaders(field string) (message.Headers, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(field))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("headers field is not a JSON object: %w", err)
	}
	if raw == nil {
		return nil, errors.New("headers field is not a JSON object: null")
	}
	if dec.More() {
		return nil, errors.New("headers field is not a JSON object: data after the object")
	}
	h := make(message.Headers, len(raw)+2)
	for k, v := range raw {
		v = bytes.TrimSpace(v)
		switch {
		case bytes.Equal(v, []byte("null")):
			h[k] = ""
		case len(v) > 0 && v[0] == '"':
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return nil, fmt.Errorf("header %q: %w", k, err)
			}
			h[k] = s
		default:
			h[k] = string(v)
		}
	}
	return h, nil
}

// decodeBody parses a body field: a base64 JSON string; "" and null are an
// empty body.
func decodeBody(field string) ([]byte, error) {
	f := strings.TrimSpace(field)
	if f == "" || f == "null" {
		return []byte{}, nil
	}
	var s string
	if err := json.Unmarshal([]byte(f), &s); err != nil {
		return nil, fmt.Errorf("body field is not a JSON string: %w", err)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("body field is not base64: %w", err)
	}
	return b, nil
}

// decodeEntry turns the fields of a stream entry into a message.
//
// An entry with a headers field is CAP's: both fields must decode, else the
// message holds no CAP headers but HeaderError, HeaderEntryID and
// HeaderRawHeaders, the raw body field as its body, and err wraps
// ErrMalformed. The bus then stores it Failed and acknowledges it.
//
// An entry without a headers field comes from a producer that does not
// speak CAP: the message has no headers (the bus's CustomHeaders may
// supply them) and its body is the body field, base64-decoded when it is a
// base64 JSON string and as it is otherwise, or, without a body field, a
// JSON object of all the entry's fields.
func decodeEntry(id string, values map[string]any) (msg *message.Message, err error) {
	hv, hasHeaders := values[fieldHeaders]
	bv, hasBody := values[fieldBody]
	if !hasHeaders {
		msg = &message.Message{Headers: message.Headers{}}
		switch {
		case hasBody:
			s := text(bv)
			if b, err := decodeBody(s); err == nil && strings.TrimSpace(s) != "" {
				msg.Body = b
			} else {
				msg.Body = []byte(s)
			}
		default:
			fields := make(map[string]string, len(values))
			for k, v := range values {
				fields[k] = text(v)
			}
			msg.Body, _ = json.Marshal(fields)
		}
		return msg, nil
	}
	h, herr := decodeHeaders(text(hv))
	var body []byte
	var berr error
	if hasBody {
		body, berr = decodeBody(text(bv))
	} else {
		body = []byte{}
	}
	if herr == nil && berr == nil {
		return &message.Message{Headers: h, Body: body}, nil
	}
	cause := errors.Join(herr, berr)
	err = fmt.Errorf("%w %s: %w", ErrMalformed, id, cause)
	msg = &message.Message{
		Headers: message.Headers{
			HeaderError:      err.Error(),
			HeaderEntryID:    id,
			HeaderRawHeaders: text(hv),
		},
		Body: []byte(text(bv)),
	}
	return msg, err
}

// text returns a field value as a string; go-redis returns strings.
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case nil:
		return ""
	default:
		return fmt.Sprint(x)
	}
}

// EntryFields returns the fields of the entry the transport writes for m,
// in CAP's order: headers, then body. It is for programs that write entries
// with a client of their own, such as benchmarks' baselines.
func EntryFields(m *message.Message) []string {
	return []string{fieldHeaders, encodeHeaders(m.Headers), fieldBody, encodeBody(m.Body)}
}

// DecodeEntry returns the message of an entry as a consumer of the
// transport delivers it; for an entry that is not CAP's the error wraps
// ErrMalformed and the message holds the raw fields (see Delivery.Err).
func DecodeEntry(m goredis.XMessage) (*message.Message, error) {
	return decodeEntry(m.ID, m.Values)
}
