package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRun runs the example and checks what it prints: the four kinds of
// span of one trace, the failed attempt, the metrics and a healthy bus.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(&out))
	s := out.String()
	for _, want := range []string{
		`"Name": "create orders.created"`, `"Name": "send orders.created"`,
		`"Name": "receive orders.created"`, `"Name": "process orders.created"`,
		`the warehouse is not answering`,
		`"Name": "cap.messages.published"`, `"Name": "messaging.process.duration"`,
		`"Name": "cap.messages.handled"`, `"Name": "cap.outbox.due"`, `"healthy": true`,
	} {
		require.Contains(t, s, want)
	}
}
