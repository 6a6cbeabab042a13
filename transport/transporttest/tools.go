package transporttest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// Tools for a transport's own tests, beside the suite.

// Message returns a message with the headers CAP's publisher sets, for
// topic, with a fresh random id (brokers that de-duplicate on the id, such
// as NATS, never see it twice) and body.
func Message(topic string, body []byte) *message.Message {
	id := newID()
	return &message.Message{
		Headers: message.Headers{
			message.HeaderCallbackName:        "",
			message.HeaderMessageID:           id,
			message.HeaderCorrelationID:       id,
			message.HeaderCorrelationSequence: "0",
			message.HeaderMessageName:         topic,
			message.HeaderType:                "String",
			message.HeaderSentTime:            message.FormatSentTime(time.Now()),
		},
		Body: body,
	}
}

// Receive returns c's next delivery, or fails the test after timeout.
func Receive(t testing.TB, c transport.Consumer, timeout time.Duration) transport.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d, err := c.Receive(ctx)
	require.NoError(t, err)
	return d
}

// RequireNothing fails the test when c delivers anything within wait.
func RequireNothing(t testing.TB, c transport.Consumer, wait time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	d, err := c.Receive(ctx)
	if err == nil {
		t.Fatalf("unexpected delivery: topic %q, headers %v", d.Topic(), d.Message().Headers)
	}
	require.ErrorIs(t, err, context.DeadlineExceeded)
}
