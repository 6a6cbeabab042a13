package message

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrInvalidContent reports a stored Content column that cannot be decoded.
var ErrInvalidContent = errors.New("message: invalid content")

// contentBodyKey marks, in the stored Content only, a Value that holds the
// body as a data URI because the body is not UTF-8 JSON. Without the mark a
// string payload that happens to read "data:...;base64,..." would be taken
// for an encoded body. It never travels to the broker.
const contentBodyKey, contentBodyDataURI = "go-cap-body", "data-uri"

// nullableHeaders are written as JSON null when empty, as CAP does.
var nullableHeaders = map[string]bool{HeaderCallbackName: true}

// EncodeContent returns the stored form of m, CAP's Content column:
// {"Headers":{...},"Value":<body>}. A body that is not valid UTF-8 JSON is
// stored as the string "data:<cap-msg-type>;base64,<body>", as CAP stores
// bodies it could not deserialize, with a "go-cap-body" entry among the
// stored headers that tells DecodeContent to restore it.
func EncodeContent(m *Message) ([]byte, error) {
	size := len(m.Body) + 32
	for k, v := range m.Headers {
		size += len(k) + len(v) + 6
	}
	buf := make([]byte, 0, size)
	buf = append(buf, `{"Headers":{`...)
	rawBody := len(m.Body) > 0 && !(utf8.Valid(m.Body) && validBody(m.Body))
	first := true
	if rawBody {
		buf = append(buf, `"`+contentBodyKey+`":"`+contentBodyDataURI+`"`...)
		first = false
	}
	for k, v := range m.Headers {
		if k == contentBodyKey {
			continue
		}
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = appendString(buf, k)
		buf = append(buf, ':')
		if v == "" && nullableHeaders[k] {
			buf = append(buf, "null"...)
			continue
		}
		buf = appendString(buf, v)
	}
	buf = append(buf, `},"Value":`...)
	switch {
	case len(m.Body) == 0:
		buf = append(buf, "null"...)
	case !rawBody:
		buf = append(buf, m.Body...)
	default:
		typ := m.Headers[HeaderType]
		if typ == "" {
			typ = "UnknownType"
		}
		buf = appendString(buf, DataURIPrefix(typ)+base64.StdEncoding.EncodeToString(m.Body))
	}
	return append(buf, '}'), nil
}

// validBody is json.Valid, through validJSON where it can decide.
func validBody(b []byte) bool {
	return validJSON(b) || json.Valid(b)
}

// DataURIPrefix returns the prefix CAP uses for a body stored as a data URI.
func DataURIPrefix(typ string) string { return "data:" + typ + ";base64," }

type content struct {
	Headers map[string]*string `json:"Headers"`
	Value   json.RawMessage    `json:"Value"`
}

// DecodeContent parses a stored Content column back into a Message. Null
// header values become empty strings; a null Value becomes an empty body.
func DecodeContent(data []byte) (*Message, error) {
	var c content
	if h, v, ok := parseContent(data); ok {
		c.Headers, c.Value = h, v
	} else if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidContent, err)
	}
	if c.Headers == nil {
		return nil, fmt.Errorf("%w: no Headers object", ErrInvalidContent)
	}
	m := &Message{Headers: make(Headers, len(c.Headers))}
	for k, v := range c.Headers {
		if v != nil {
			m.Headers[k] = *v
		} else {
			m.Headers[k] = ""
		}
	}
	// The mark's name is reserved: EncodeContent writes it only as the mark.
	mark := m.Headers[contentBodyKey]
	delete(m.Headers, contentBodyKey)
	v := bytes.TrimSpace(c.Value)
	if len(v) == 0 || bytes.Equal(v, []byte("null")) {
		return m, nil
	}
	if mark == contentBodyDataURI {
		var s string
		if err := json.Unmarshal(v, &s); err != nil || !strings.HasPrefix(s, "data:") {
			return nil, fmt.Errorf("%w: body marked as a data URI is not one", ErrInvalidContent)
		}
		i := strings.Index(s, ";base64,")
		if i < 0 {
			return nil, fmt.Errorf("%w: body marked as a data URI is not base64", ErrInvalidContent)
		}
		b, err := base64.StdEncoding.DecodeString(s[i+len(";base64,"):])
		if err != nil {
			return nil, fmt.Errorf("%w: data URI body: %w", ErrInvalidContent, err)
		}
		m.Body = b
		return m, nil
	}
	m.Body = append([]byte(nil), v...)
	return m, nil
}
