package message

import (
	"encoding/json"
	"unicode/utf8"
)

// The Content column is read for every claimed row and written for every
// message, and encoding/json spent most of that time validating the body
// byte by byte through its general scanner. The functions here handle the
// layout EncodeContent writes, and the common cases of it, in tight loops;
// anything else goes to encoding/json, which stays the reference (the fuzz
// tests compare the two).

// maxDepth bounds the nesting validJSON follows; deeper values go to
// encoding/json (whose own limit is 10,000).
const maxDepth = 1000

// validJSON reports whether b is exactly one JSON value, with optional
// white space around it: json.Valid, for values no deeper than maxDepth.
func validJSON(b []byte) bool {
	i, ok := skipValue(b, skipSpace(b, 0), 0)
	return ok && skipSpace(b, i) == len(b)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue returns the index after the value that starts at b[i].
func skipValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return i, false
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{':
		return skipContainer(b, i, depth+1, '}')
	case c == '[':
		return skipContainer(b, i, depth+1, ']')
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	case c == '-' || ('0' <= c && c <= '9'):
		return skipNumber(b, i)
	}
	return i, false
}

func skipLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// skipNumber follows JSON's grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	digits := func() bool {
		start := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i > start
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		digits()
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return i, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return i, false
		}
	}
	return i, true
}

// skipString returns the index after the string that starts at b[i] (its
// opening quote). Like encoding/json it accepts any bytes of 0x20 and above,
// valid UTF-8 or not, and the escapes \" \\ \/ \b \f \n \r \t \uXXXX.
func skipString(b []byte, i int) (int, bool) {
	i++
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, true
		case c == '\\':
			if i+1 >= len(b) {
				return i, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(b)-i < 6 || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return i, false
				}
				i += 6
			default:
				return i, false
			}
		case c < 0x20:
			return i, false
		default:
			i++
		}
	}
	return i, false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// skipContainer returns the index after the object (end '}') or array (end
// ']') that starts at b[i].
func skipContainer(b []byte, i, depth int, end byte) (int, bool) {
	if depth > maxDepth {
		return i, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == end {
		return i + 1, true
	}
	for {
		var ok bool
		if end == '}' { // a member's name first
			if i >= len(b) || b[i] != '"' {
				return i, false
			}
			if i, ok = skipString(b, i); !ok {
				return i, false
			}
			i = skipSpace(b, i)
			if i >= len(b) || b[i] != ':' {
				return i, false
			}
			i = skipSpace(b, i+1)
		}
		if i, ok = skipValue(b, i, depth); !ok {
			return i, false
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case end:
			return i + 1, true
		default:
			return i, false
		}
	}
}

// appendString appends s as json.Marshal writes a string.
func appendString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		// What json.Marshal writes as it is: printable ASCII but for the
		// quote, the backslash and the HTML characters it escapes.
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always marshals
			return append(buf, b...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

// parseContent reads Content in the layout EncodeContent and CAP write:
// {"Headers":{"k":"v" or null,...},"Value":<value>} with no white space
// outside the value. It reports false for anything else, or for anything it
// would decode differently from encoding/json (escapes or invalid UTF-8 in a
// header, an invalid or too deep value), so that the caller falls back to
// encoding/json.
func parseContent(data []byte) (headers map[string]*string, value []byte, ok bool) {
	const head, mid = `{"Headers":{`, `,"Value":`
	if len(data) < len(head) || string(data[:len(head)]) != head {
		return nil, nil, false
	}
	i := len(head)
	headers = make(map[string]*string, 8)
	if i < len(data) && data[i] == '}' {
		i++
	} else {
		for {
			k, j, ok := plainString(data, i)
			if !ok || j >= len(data) || data[j] != ':' {
				return nil, nil, false
			}
			i = j + 1
			if len(data)-i >= 4 && string(data[i:i+4]) == "null" {
				headers[k] = nil
				i += 4
			} else {
				v, j, ok := plainString(data, i)
				if !ok {
					return nil, nil, false
				}
				headers[k] = &v
				i = j
			}
			if i >= len(data) {
				return nil, nil, false
			}
			if data[i] == '}' {
				i++
				break
			}
			if data[i] != ',' {
				return nil, nil, false
			}
			i++
		}
	}
	if len(data)-i < len(mid) || string(data[i:i+len(mid)]) != mid || data[len(data)-1] != '}' {
		return nil, nil, false
	}
	value = data[i+len(mid) : len(data)-1]
	if !validJSON(value) {
		return nil, nil, false
	}
	return headers, value, true
}

// plainString reads the JSON string at data[i] when it has no escapes and is
// valid UTF-8 (what encoding/json would decode to the same bytes), and
// returns the index after it.
func plainString(data []byte, i int) (string, int, bool) {
	if i >= len(data) || data[i] != '"' {
		return "", i, false
	}
	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			s := data[i+1 : j]
			if !utf8.Valid(s) {
				return "", i, false
			}
			return string(s), j + 1, true
		case c == '\\' || c < 0x20:
			return "", i, false
		}
	}
	return "", i, false
}
