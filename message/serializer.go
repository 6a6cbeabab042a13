package message

import "encoding/json"

// Serializer turns payload values into message bodies and back.
type Serializer interface {
	// Marshal returns the body for v. A nil v may return an empty body.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes body into the value pointed to by v.
	Unmarshal(body []byte, v any) error
}

// JSON is the default Serializer, using encoding/json.
type JSON struct{}

// Marshal implements Serializer.
func (JSON) Marshal(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	return json.Marshal(v)
}

// Unmarshal implements Serializer. An empty body leaves v unchanged.
func (JSON) Unmarshal(body []byte, v any) error {
	if len(body) == 0 {
		return nil
	}
	return json.Unmarshal(body, v)
}
