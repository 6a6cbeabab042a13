package message

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidContent reports a stored Content column that cannot be decoded.
var ErrInvalidContent = errors.New("message: invalid content")

// nullableHeaders are written as JSON null when empty, as CAP does.
var nullableHeaders = map[string]bool{HeaderCallbackName: true}

// EncodeContent returns the stored form of m, CAP's Content column:
// {"Headers":{...},"Value":<body>}. A body that is not valid JSON is stored
// as the string "data:<cap-msg-type>;base64,<body>", as CAP stores bodies it
// could not deserialize; DecodeContent restores it.
func EncodeContent(m *Message) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(m.Body) + 64*len(m.Headers) + 32)
	buf.WriteString(`{"Headers":{`)
	first := true
	for k, v := range m.Headers {
		if !first {
			buf.WriteByte(',')
		}
		first = false
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, fmt.Errorf("message: encode header %q: %w", k, err)
		}
		buf.Write(kb)
		buf.WriteByte(':')
		if v == "" && nullableHeaders[k] {
			buf.WriteString("null")
			continue
		}
		vb, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("message: encode header %q: %w", k, err)
		}
		buf.Write(vb)
	}
	buf.WriteString(`},"Value":`)
	switch {
	case len(m.Body) == 0:
		buf.WriteString("null")
	case json.Valid(m.Body):
		buf.Write(m.Body)
	default:
		typ := m.Headers[HeaderType]
		if typ == "" {
			typ = "UnknownType"
		}
		s, _ := json.Marshal(DataURIPrefix(typ) + base64.StdEncoding.EncodeToString(m.Body))
		buf.Write(s)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
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
	if err := json.Unmarshal(data, &c); err != nil {
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
	v := bytes.TrimSpace(c.Value)
	if len(v) == 0 || bytes.Equal(v, []byte("null")) {
		return m, nil
	}
	if v[0] == '"' {
		var s string
		if err := json.Unmarshal(v, &s); err == nil && strings.HasPrefix(s, "data:") {
			if i := strings.Index(s, ";base64,"); i > 0 {
				if b, err := base64.StdEncoding.DecodeString(s[i+len(";base64,"):]); err == nil {
					m.Body = b
					return m, nil
				}
			}
		}
	}
	m.Body = append([]byte(nil), v...)
	return m, nil
}
