package rabbitmq

import (
	"encoding/json"
	"fmt"
	"math/big"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-cap/cap/message"
)

// toTable returns the AMQP headers of a message: every header as a string,
// an empty value (CAP's null) as void, as CAP writes them.
func toTable(h message.Headers) amqp.Table {
	t := make(amqp.Table, len(h))
	for k, v := range h {
		if v == "" {
			t[k] = nil
			continue
		}
		t[k] = v
	}
	return t
}

// fromTable returns the headers of a delivery. Values of other AMQP types
// than strings, which producers that do not speak CAP may send, become
// strings: byte arrays as UTF-8 text, numbers in decimal, void as "".
func fromTable(t amqp.Table) message.Headers {
	h := make(message.Headers, len(t)+2)
	for k, v := range t {
		h[k] = headerString(v)
	}
	return h
}

func headerString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	case bool:
		return strconv.FormatBool(x)
	case int8:
		return strconv.FormatInt(int64(x), 10)
	case int16:
		return strconv.FormatInt(int64(x), 10)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case int64:
		return strconv.FormatInt(x, 10)
	case int:
		return strconv.Itoa(x)
	case uint8:
		return strconv.FormatUint(uint64(x), 10)
	case uint16:
		return strconv.FormatUint(uint64(x), 10)
	case uint32:
		return strconv.FormatUint(uint64(x), 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case amqp.Decimal:
		return decimalString(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	case amqp.Table, []any:
		b, err := json.Marshal(jsonable(x))
		if err != nil {
			return fmt.Sprint(x)
		}
		return string(b)
	default:
		return fmt.Sprint(x)
	}
}

// jsonable turns the byte arrays nested in a table or array into strings,
// so that they read as text rather than base64 once encoded as JSON.
func jsonable(v any) any {
	switch x := v.(type) {
	case []byte:
		return string(x)
	case amqp.Table:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = jsonable(e)
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = jsonable(e)
		}
		return a
	case amqp.Decimal:
		return json.Number(decimalString(x))
	default:
		return x
	}
}

// decimalString formats an AMQP decimal (Value × 10^-Scale) exactly.
func decimalString(d amqp.Decimal) string {
	r := new(big.Rat).SetFrac(big.NewInt(int64(d.Value)), new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(d.Scale)), nil))
	return r.FloatString(int(d.Scale))
}
