package redis

import (
	"bytes"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
)

func toValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b bytes.Buffer
	for _, r := range s {
		b.WriteRune(r) // invalid bytes come out as U+FFFD
	}
	return b.String()
}

func TestEncodeFields(t *testing.T) {
	require.Equal(t, `{"cap-callback-name":null,"cap-msg-id":"1","x":"\u003cä\u003e"}`,
		encodeHeaders(message.Headers{"cap-msg-id": "1", "cap-callback-name": "", "x": "<ä>"}))
	require.Equal(t, `""`, encodeBody(nil))
	require.Equal(t, `"eyJhIjoxfQ=="`, encodeBody([]byte(`{"a":1}`)))
}

func TestDecodeEntry(t *testing.T) {
	m, err := decodeEntry("1-0", map[string]any{
		"headers": `{"cap-msg-id":6757258586250821633,"cap-callback-name":null,"n":1.50,"o":{"a":[1]},"b":true}`,
		"body":    `""`,
	})
	require.NoError(t, err)
	require.Equal(t, message.Headers{"cap-msg-id": "6757258586250821633", "cap-callback-name": "",
		"n": "1.50", "o": `{"a":[1]}`, "b": "true"}, m.Headers, "numbers keep their text")
	require.Empty(t, m.Body)

	m, err = decodeEntry("1-0", map[string]any{"headers": `{}`})
	require.NoError(t, err, "no body field: an empty body")
	require.Empty(t, m.Body)

	// Without headers: a CAP-style body is decoded, any other kept as it is.
	m, err = decodeEntry("1-0", map[string]any{"body": `"eyJhIjoxfQ=="`})
	require.NoError(t, err)
	require.Equal(t, `{"a":1}`, string(m.Body))
	require.Empty(t, m.Headers)
	m, _ = decodeEntry("1-0", map[string]any{"body": `plain`})
	require.Equal(t, "plain", string(m.Body))

	_, err = decodeEntry("7-1", map[string]any{"headers": `{"a":"b"}`, "body": `"%%%"`})
	require.ErrorIs(t, err, ErrMalformed)
	require.ErrorContains(t, err, "7-1")
	require.ErrorContains(t, err, "body field is not base64")
}

func TestGlob(t *testing.T) {
	require.Equal(t, "a.*.created", glob("a.*.created"))
	require.Equal(t, "a.*", glob("a.#"))
	require.Equal(t, `we\[i\]rd\?.\*x.*`, glob("we[i]rd?.*x.#"))
}

func TestConfigDefaults(t *testing.T) {
	c, opts, err := Config{}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:6379", opts.Addr)
	require.Equal(t, DefaultReadCount, c.ReadCount)
	require.Equal(t, DefaultBlock, c.Block)
	require.Equal(t, DefaultClaimIdle, c.ClaimIdle)
	require.Equal(t, DefaultClaimInterval, c.ClaimInterval)
	require.Equal(t, DefaultWildcardRefresh, c.WildcardRefresh)
	require.NotEmpty(t, c.ConsumerName)

	c, _, err = Config{ClaimIdle: 200 * time.Millisecond}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, 200*time.Millisecond, c.ClaimInterval, "never longer than ClaimIdle")

	for _, bad := range []Config{{URL: "http://x"}, {ReadCount: -1}, {Block: time.Microsecond}, {MaxLen: -1}} {
		_, err := New(bad)
		require.ErrorIs(t, err, ErrConfig, "%+v", bad)
	}
}
