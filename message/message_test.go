package message

import (
	"encoding/json"
	"errors"
	"math"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// A Content column as CAP writes it (reference: real rows from public dumps).
const capContent = `{"Headers":{"cap-callback-name":null,"cap-msg-id":"6757258586250821633","cap-corr-id":"6757258586250821633","cap-corr-seq":"0","cap-msg-name":"CustomerRechargedEvent","cap-msg-type":"CustomerRechargedEvent","cap-senttime":"03/23/2025 19:26:26"},"Value":{"CustomerId":42,"Amount":12.5,"Note":"\u81EA\u0026"}}`

func TestDecodeCAPContent(t *testing.T) {
	t.Parallel()
	m, err := DecodeContent([]byte(capContent))
	require.NoError(t, err)
	require.Equal(t, "6757258586250821633", m.ID())
	require.Equal(t, "CustomerRechargedEvent", m.Name())
	require.Equal(t, "6757258586250821633", m.CorrelationID())
	require.Equal(t, 0, m.CorrelationSequence())
	require.Equal(t, "", m.CallbackName())
	_, has := m.Headers[HeaderCallbackName]
	require.True(t, has, "a null header stays present")
	var v struct {
		CustomerID int `json:"CustomerId"`
		Amount     float64
		Note       string
	}
	require.NoError(t, json.Unmarshal(m.Body, &v))
	require.Equal(t, 42, v.CustomerID)
	require.Equal(t, "自&", v.Note)
	st, err := ParseSentTime(m.Headers[HeaderSentTime])
	require.NoError(t, err)
	require.Equal(t, time.Date(2025, 3, 23, 19, 26, 26, 0, time.UTC), st)
}

func TestContentRoundTrip(t *testing.T) {
	t.Parallel()
	cases := []*Message{
		{Headers: Headers{HeaderMessageID: "1", HeaderCallbackName: ""}, Body: []byte(`{"a":[1,2,{"b":"\"x\""}]}`)},
		{Headers: Headers{HeaderMessageID: "2", "x-ünï": "välue \"q\""}, Body: nil},
		{Headers: Headers{HeaderMessageID: "3", HeaderType: "Blob"}, Body: []byte{0, 1, 2, 0xff, 'n', 'o', 't', ' ', 'j'}},
		{Headers: Headers{HeaderMessageID: "4"}, Body: []byte(`"a plain string"`)},
	}
	for _, c := range cases {
		b, err := EncodeContent(c)
		require.NoError(t, err)
		require.True(t, json.Valid(b), "content must be JSON: %s", b)
		got, err := DecodeContent(b)
		require.NoError(t, err)
		require.Equal(t, c.Headers, got.Headers)
		require.Equal(t, string(c.Body), string(got.Body))
	}
	b, _ := EncodeContent(cases[0])
	require.Contains(t, string(b), `"cap-callback-name":null`)
	b, _ = EncodeContent(cases[2])
	require.Contains(t, string(b), `"Value":"data:Blob;base64,AAEC/25vdCBq"`)
}

func TestDecodeContentRejectsGarbage(t *testing.T) {
	t.Parallel()
	for _, in := range []string{``, `{`, `[]`, `{"Value":1}`, `null`} {
		_, err := DecodeContent([]byte(in))
		require.ErrorIs(t, err, ErrInvalidContent, "input %q", in)
	}
}

func TestSentTimeFormats(t *testing.T) {
	t.Parallel()
	want := time.Date(2021, 6, 11, 20, 47, 21, 0, time.UTC)
	require.Equal(t, "06/11/2021 20:47:21", FormatSentTime(want))
	require.Equal(t, "06/11/2021 20:47:21", FormatSentTime(want.In(time.FixedZone("x", 3600)).Add(0)))
	for in, exp := range map[string]time.Time{
		"06/11/2021 20:47:21":         want,                     // invariant (CAP 8.3+)
		"6/11/2021 8:47:21 PM":        want,                     // en-US (CAP 7.0-8.2)
		"2021/6/11 20:47:21":          want,                     // zh-CN DateTime
		"2021/6/11 20:47:21 +08:00":   want.Add(-8 * time.Hour), // zh-CN DateTimeOffset (CAP 6.x and older)
		"6/11/2021 8:47:21 PM +02:00": want.Add(-2 * time.Hour), // en-US DateTimeOffset
		"11.06.2021 20:47:21":         want,                     // de-DE
		"2021-06-11 20:47:21":         want,                     // sv-SE and similar
		"2021-06-11T20:47:21.1234567": want.Add(123456700),      // ISO 8601, no offset
		"2021-06-11T20:47:21Z":        want,
	} {
		got, err := ParseSentTime(in)
		require.NoError(t, err, in)
		require.True(t, exp.Equal(got), "%q: got %v want %v", in, got, exp)
	}
	_, err := ParseSentTime("yesterday")
	require.ErrorIs(t, err, ErrInvalidTime)
}

func TestDelayFormat(t *testing.T) {
	t.Parallel()
	for d, s := range map[time.Duration]string{
		5 * time.Minute:        "00:05:00",
		24 * time.Hour:         "1.00:00:00",
		500 * time.Millisecond: "00:00:00.5000000",
		-90 * time.Second:      "-00:01:30",
		26*time.Hour + 100:     "1.02:00:00.0000001",
		3*time.Hour + 4*time.Minute + 5*time.Second: "03:04:05",
	} {
		require.Equal(t, s, FormatDelay(d))
		got, err := ParseDelay(s)
		require.NoError(t, err, s)
		require.Equal(t, d, got, s)
	}
	got, err := ParseDelay("00:00:01.5")
	require.NoError(t, err)
	require.Equal(t, 1500*time.Millisecond, got)
	for _, bad := range []string{"", "5", "00:60:00", "24:00:00", "1.2.3:00:00", "00:00:00.", "00:00:00.12345678", "a:b:c"} {
		_, err := ParseDelay(bad)
		require.ErrorIs(t, err, ErrInvalidTime, bad)
	}
}

func TestIDGenerator(t *testing.T) {
	t.Parallel()
	g, err := NewIDGenerator(7)
	require.NoError(t, err)
	a, b := g.Next(), g.Next()
	require.Equal(t, a+1, b, "consecutive ids differ by one")
	require.Equal(t, int64(7), a>>53, "worker id in the top bits")
	stamp := (a & (1<<53 - 1)) >> 12
	require.InDelta(t, time.Now().UnixMilli()-Epoch, stamp, 5000)

	const n = 8
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]int64, 0, 1000)
			for range 1000 {
				local = append(local, g.Next())
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range local {
				require.False(t, seen[id], "duplicate id %d", id)
				seen[id] = true
			}
		}()
	}
	wg.Wait()
	require.Len(t, seen, n*1000)

	for _, w := range []int64{-1, 1024} {
		_, err := NewIDGenerator(w)
		require.True(t, errors.Is(err, ErrWorkerID), "worker %d", w)
	}
}

func TestWorkerIDFromEnv(t *testing.T) {
	t.Setenv("CAP_WORKERID", "12")
	w, err := WorkerIDFromEnv()
	require.NoError(t, err)
	require.Equal(t, int64(12), w)
	t.Setenv("CAP_WORKERID", "4096")
	_, err = WorkerIDFromEnv()
	require.ErrorIs(t, err, ErrWorkerID)
	t.Setenv("CAP_WORKERID", "x")
	_, err = WorkerIDFromEnv()
	require.ErrorIs(t, err, ErrWorkerID)
}

func TestJSONSerializer(t *testing.T) {
	t.Parallel()
	var s Serializer = JSON{}
	b, err := s.Marshal(map[string]int{"a": 1})
	require.NoError(t, err)
	var m map[string]int
	require.NoError(t, s.Unmarshal(b, &m))
	require.Equal(t, 1, m["a"])
	b, err = s.Marshal(nil)
	require.NoError(t, err)
	require.Empty(t, b)
	require.NoError(t, s.Unmarshal(nil, &m))
}

func TestContentBodyForms(t *testing.T) {
	t.Parallel()
	// A JSON string that reads like a data URI is a payload, not an encoded body.
	dataURI := []byte(`"data:image/png;base64,iVBORw0KGgo="`)
	b, err := EncodeContent(&Message{Headers: Headers{HeaderMessageID: "1"}, Body: dataURI})
	require.NoError(t, err)
	got, err := DecodeContent(b)
	require.NoError(t, err)
	require.Equal(t, string(dataURI), string(got.Body))

	// JSON that is not UTF-8 cannot live in a text column: it is stored as a
	// data URI, marked, and restored byte for byte.
	latin1 := []byte("{\"name\":\"caf\xe9\"}")
	b, err = EncodeContent(&Message{Headers: Headers{HeaderMessageID: "2"}, Body: latin1})
	require.NoError(t, err)
	require.True(t, utf8.Valid(b))
	require.Contains(t, string(b), `"go-cap-body":"data-uri"`)
	got, err = DecodeContent(b)
	require.NoError(t, err)
	require.Equal(t, latin1, got.Body)
	require.Equal(t, Headers{HeaderMessageID: "2"}, got.Headers, "the mark stays in the stored form")

	// A row CAP stored Failed with a data URI (no mark) reads back as the string.
	got, err = DecodeContent([]byte(`{"Headers":{},"Value":"data:Order;base64,AAE="}`))
	require.NoError(t, err)
	require.Equal(t, `"data:Order;base64,AAE="`, string(got.Body))

	_, err = DecodeContent([]byte(`{"Headers":{"go-cap-body":"data-uri"},"Value":12}`))
	require.ErrorIs(t, err, ErrInvalidContent)
}

func TestParseDelayRange(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"106751.23:59:59", "106751.23:47:16.8547759", "106752.00:00:00"} {
		_, err := ParseDelay(s)
		require.ErrorIs(t, err, ErrInvalidTime, s)
	}
	d, err := ParseDelay("106751.23:47:16.8547758")
	require.NoError(t, err)
	require.Equal(t, time.Duration(math.MaxInt64/100*100), d, "the largest delay in .NET ticks")
}
