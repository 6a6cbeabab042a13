package rabbitmq

import (
	"encoding/json"
	"math"
	"math/big"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-cap/cap/message"
)

// Fuzz tests of the header conversion between the bus and AMQP: what this
// transport sends must be a table the client accepts and must read back
// unchanged; what a producer that does not speak CAP sends, in any AMQP
// field type, must become text headers. Seeds are in testdata/fuzz; run one
// briefly with
//
//	go test -run '^$' -fuzz '^FuzzHeadersRoundTrip$' -fuzztime 10s ./transport/rabbitmq/

// FuzzHeadersRoundTrip: any text headers survive toTable and fromTable, an
// empty value (CAP's null) included.
func FuzzHeadersRoundTrip(f *testing.F) {
	f.Add("cap-msg-id", "6757258586250821633", "cap-callback-name", "")
	f.Add("cap-senttime", "03/23/2025 19:26:26", "cap-exception", "SubscriberExecutionFailedException-->boom")
	f.Add("", "", "x-ünï", "välue \"q\" \x00")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		in := message.Headers{k1: v1, k2: v2}
		tbl := toTable(in)
		if err := tbl.Validate(); err != nil {
			t.Fatalf("toTable(%q) = %v, which the client refuses: %v", in, tbl, err)
		}
		out := fromTable(tbl)
		if len(out) != len(in) {
			t.Fatalf("toTable then fromTable of %q gives %q", in, out)
		}
		for k, v := range in {
			if w, ok := out[k]; !ok || w != v {
				t.Fatalf("toTable then fromTable of %q gives %q", in, out)
			}
		}
	})
}

// FuzzHeaderValues: a table holding every AMQP field type becomes text
// headers; numbers read back as the same number, byte arrays as their
// text, tables and arrays as JSON.
func FuzzHeaderValues(f *testing.F) {
	f.Add(int64(6757258586250821633), 0.25, true, []byte("billing"), uint8(2), int32(12345), int64(1751399078))
	f.Add(int64(-1), math.Inf(1), false, []byte{0xff, 0x00, '"'}, uint8(255), int32(math.MinInt32), int64(-62135596800))
	f.Add(int64(math.MinInt64), math.NaN(), true, []byte(nil), uint8(0), int32(-1), int64(253402300799))
	f.Fuzz(func(t *testing.T, i int64, fl float64, b bool, raw []byte, scale uint8, dv int32, sec int64) {
		tbl := amqp.Table{
			"i8": int8(i), "i16": int16(i), "i32": int32(i), "i64": i,
			"u8": uint8(i), "u16": uint16(i), "u32": uint32(i), "u64": uint64(i),
			"f32": float32(fl), "f64": fl, "bool": b, "bytes": raw, "void": nil,
			"dec":   amqp.Decimal{Scale: scale, Value: dv},
			"time":  time.Unix(sec, 0),
			"table": amqp.Table{"b": raw, "n": i, "d": amqp.Decimal{Scale: scale, Value: dv}, "a": []any{raw, int16(i)}},
			"array": []any{raw, i, b, amqp.Table{"b": raw}},
		}
		h := fromTable(tbl)
		if len(h) != len(tbl) {
			t.Fatalf("fromTable(%v) = %q: headers lost", tbl, h)
		}
		for k, want := range map[string]string{
			"i8": strconv.Itoa(int(int8(i))), "i16": strconv.Itoa(int(int16(i))), "i32": strconv.Itoa(int(int32(i))),
			"i64": strconv.FormatInt(i, 10), "u8": strconv.Itoa(int(uint8(i))), "u16": strconv.Itoa(int(uint16(i))),
			"u32": strconv.FormatUint(uint64(uint32(i)), 10), "u64": strconv.FormatUint(uint64(i), 10),
			"bool": strconv.FormatBool(b), "bytes": string(raw), "void": "",
		} {
			if h[k] != want {
				t.Fatalf("header %s: %q, want %q", k, h[k], want)
			}
		}
		if !math.IsNaN(fl) {
			if got, err := strconv.ParseFloat(h["f64"], 64); err != nil || got != fl {
				t.Fatalf("header f64 %q does not read back as %v (%v)", h["f64"], fl, err)
			}
		}
		dec, ok := new(big.Rat).SetString(h["dec"])
		want := new(big.Rat).SetFrac(big.NewInt(int64(dv)), new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil))
		if !ok || dec.Cmp(want) != 0 {
			t.Fatalf("header dec %q is not %d × 10^-%d", h["dec"], dv, scale)
		}
		for _, k := range []string{"table", "array"} {
			if !json.Valid([]byte(h[k])) {
				t.Fatalf("header %s is not JSON: %q", k, h[k])
			}
		}
	})
}
