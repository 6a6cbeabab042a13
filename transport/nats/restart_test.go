package nats

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

const jetstreamMemory = jetstream.MemoryStorage

// embedded runs a nats-server of the test's own with JetStream on file
// storage in dir, on port (0: a free one).
func embedded(t *testing.T, dir string, port int) *server.Server {
	t.Helper()
	if port == 0 {
		port = -1
	}
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true,
	})
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second), "embedded nats-server did not start")
	t.Cleanup(s.Shutdown)
	return s
}

func stop(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

// The server stopped under the client: sends and subscriptions fail with
// ErrUnavailable, and everything works again when it is back; messages sent
// before the restart and not yet consumed survive it (file storage), and
// so does the unacknowledged one the consumer held. Nothing is lost.
func TestServerRestartMidStream(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := embedded(t, dir, 0)
	port := s.Addr().(interface{ String() string }).String()
	url := "nats://" + port
	tr := newTransport(t, Config{URL: url, ReconnectWait: 50 * time.Millisecond, AckWait: 2 * time.Second})
	topic := "orders.created"
	c, _ := subscribe(t, tr, topic)
	ctx := context.Background()

	const n = 200
	sent := map[string]bool{}
	var msgs []*message.Message
	for i := range n {
		m := newMessage(topic, strconv.Itoa(i))
		msgs = append(msgs, m)
		sent[m.ID()] = true
	}
	require.Nil(t, tr.SendBatch(ctx, msgs[:n/2]))

	got := map[string]int{}
	held := receive(t, c, waitLong) // not acked across the restart
	got[held.Message().ID()]++
	for range 10 {
		d := receive(t, c, waitLong)
		got[d.Message().ID()]++
		require.NoError(t, d.Ack(ctx))
	}

	stop(s)
	require.Eventually(t, func() bool { return !tr.Conn().IsConnected() }, waitLong, 10*time.Millisecond)
	require.ErrorIs(t, tr.Check(ctx), transport.ErrUnavailable, "the health check sees the server down")
	err := tr.Send(ctx, msgs[n/2])
	require.ErrorIs(t, err, transport.ErrUnavailable)
	for _, e := range tr.SendBatch(ctx, msgs[n/2:n/2+3]) {
		require.ErrorIs(t, e, transport.ErrUnavailable)
	}
	_, err = tr.Subscribe(ctx, "g", []string{topic})
	require.ErrorIs(t, err, transport.ErrUnavailable)
	require.ErrorIs(t, held.Ack(ctx), transport.ErrUnavailable, "an ack while down fails; the message comes again")

	_, p, _ := splitHostPort(port)
	embedded(t, dir, p)
	require.Eventually(t, func() bool { return tr.Conn().IsConnected() }, waitLong, 10*time.Millisecond)
	// The bus retries what failed while the server was down.
	require.Eventually(t, func() bool { return tr.SendBatch(ctx, msgs[n/2:]) == nil }, waitLong, 50*time.Millisecond)

	deadline := time.After(waitLong)
	for len(got) < n || got[held.Message().ID()] < 2 {
		rctx, cancel := context.WithCancel(ctx)
		res := make(chan transport.Delivery, 1)
		go func() {
			d, err := c.Receive(rctx)
			if err == nil {
				res <- d
			}
		}()
		select {
		case d := <-res:
			got[d.Message().ID()]++
			require.NoError(t, d.Ack(ctx))
		case <-deadline:
			cancel()
			t.Fatalf("received %d of %d distinct messages after the restart; the held one %d times", len(got), n, got[held.Message().ID()])
		}
		cancel()
	}
	for id := range sent {
		require.NotZero(t, got[id], "message %s lost", id)
	}
}

func splitHostPort(hp string) (string, int, error) {
	var host string
	var port int
	for i := len(hp) - 1; i >= 0; i-- {
		if hp[i] == ':' {
			host = hp[:i]
			_, err := fmt.Sscanf(hp[i+1:], "%d", &port)
			return host, port, err
		}
	}
	return hp, 0, fmt.Errorf("no port in %q", hp)
}
