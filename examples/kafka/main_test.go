package main

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/kafka"
)

// The example runs to the end against an in-process Kafka (kfake): both
// groups handle the committed order (shipping after one failed attempt),
// the invoice reply comes back, the rolled-back order is never sent and
// the bus is healthy.
func TestRun(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(1))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), kafka.Config{Brokers: c.ListenAddrs()}, &out))
	s := out.String()
	t.Log("\n" + s)
	for _, want := range []string{
		"kafka:    connected to " + c.ListenAddrs()[0],
		"billing:  order 1 (book, 12.50) received",
		"shipping: order 1 failed: warehouse unreachable (attempt 1, will retry)",
		"shipping: order 1 shipped on attempt 2",
		"shop:     invoice INV-0001 for order 1",
		"shop:     order 2 rolled back (payment declined)",
		"done:     1 order row, 2 published messages",
		"health:   healthy true",
	} {
		require.Contains(t, s, want)
	}
	require.NotContains(t, s, "order 2 (lamp", "the rolled-back order is not handled")
}

// With no broker at the address the example stops at once with
// transport.ErrUnavailable.
func TestRunWithoutBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	start := time.Now()
	err = run(context.Background(), kafka.Config{Brokers: []string{addr}}, &bytes.Buffer{})
	require.ErrorIs(t, err, transport.ErrUnavailable)
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestSplitBrokers(t *testing.T) {
	require.Equal(t, []string{"a:1", "b:2"}, splitBrokers(" a:1, ,b:2,"))
	require.Nil(t, splitBrokers(""))
}
