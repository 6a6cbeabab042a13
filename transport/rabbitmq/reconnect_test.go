package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/transport"
)

// closeConnections makes the broker close every connection whose client
// name starts with name (the transport's ConnectionName), as an operator
// or a stopping node does. It returns how many it closed.
func closeConnections(t *testing.T, name string) int {
	t.Helper()
	ctl, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("rabbitmqctl not found; it is needed to close connections from the broker's side")
		}
		t.Skip("rabbitmqctl not found; it is needed to close connections from the broker's side")
	}
	out, err := exec.Command(ctl, "list_connections", "pid", "client_properties", "-q").CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("rabbitmqctl list_connections: %v: %s", err, out)
		}
		t.Skipf("rabbitmqctl cannot reach the broker: %v: %s", err, out)
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		pid, props, ok := strings.Cut(line, "\t")
		if !ok || !strings.Contains(props, `{"connection_name","`+name+` `) {
			continue
		}
		if out, err := exec.Command(ctl, "close_connection", pid, "test").CombinedOutput(); err != nil {
			t.Fatalf("rabbitmqctl close_connection %s: %v: %s", pid, err, out)
		}
		n++
	}
	return n
}

// The broker closes the transport's connections in the middle of a stream
// of messages. Every message sent before, during and after is delivered at
// least once, the consumer resumes without help, sends during the outage
// fail fast with ErrUnavailable (the sender retries, as the bus does), and a
// delivery received before the drop cannot be acknowledged and comes again.
func TestReconnectDuringStream(t *testing.T) {
	t.Parallel()
	name := uniqueName("cap-reconnect-")
	tr := newTransport(t, Config{ConnectionName: name, ReconnectDelay: 20 * time.Millisecond, MaxReconnectDelay: 500 * time.Millisecond})
	topic := uniqueName("test.reconnect.")
	c, _ := subscribe(t, tr, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Receiver: counts deliveries by message id and acks them, except the
	// very first, which it keeps unacknowledged across the drop.
	var (
		mu       sync.Mutex
		received = map[string]int{}
		held     transport.Delivery
		ackErrs  int
		badAck   error
	)
	firstHeld := make(chan struct{})
	recvDone := make(chan error, 1)
	go func() {
		for {
			d, err := c.Receive(ctx)
			if err != nil {
				recvDone <- err
				return
			}
			mu.Lock()
			received[d.Message().ID()]++
			if held == nil {
				held = d
				close(firstHeld)
				mu.Unlock()
				continue
			}
			mu.Unlock()
			if err := d.Ack(ctx); err != nil {
				// Only possible for deliveries of the dropped channel, which
				// the broker sends again.
				mu.Lock()
				ackErrs++
				if !errors.Is(err, transport.ErrUnavailable) {
					badAck = err
				}
				mu.Unlock()
			}
		}
	}()

	// Sender: sends one message after another, retrying failed sends.
	var (
		sentMu     sync.Mutex
		sent       []string
		failed     int
		slowestErr time.Duration
	)
	stopSend := make(chan struct{})
	sendDone := make(chan error, 1)
	sentCount := func() int {
		sentMu.Lock()
		defer sentMu.Unlock()
		return len(sent)
	}
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stopSend:
				sendDone <- nil
				return
			default:
			}
			m := newMessage(topic, fmt.Sprintf(`{"n":%d}`, i))
			for {
				start := time.Now()
				err := tr.Send(ctx, m)
				if err == nil {
					break
				}
				if !errors.Is(err, transport.ErrUnavailable) {
					sendDone <- fmt.Errorf("send %d: %w", i, err)
					return
				}
				sentMu.Lock()
				failed++
				slowestErr = max(slowestErr, time.Since(start))
				sentMu.Unlock()
				select {
				case <-time.After(10 * time.Millisecond): // the retry's pause
				case <-ctx.Done():
					sendDone <- ctx.Err()
					return
				}
			}
			sentMu.Lock()
			sent = append(sent, m.ID())
			sentMu.Unlock()
		}
	}()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	waitFor("100 messages sent before the drop", func() bool { return sentCount() >= 100 })
	<-firstHeld

	require.Equal(t, 2, closeConnections(t, name), "the publish and the consume connection")
	atDrop := sentCount()
	waitFor("100 messages sent after the drop", func() bool { return sentCount() >= atDrop+100 })
	close(stopSend)
	require.NoError(t, <-sendDone)

	// The held delivery's channel is gone: its Ack fails and the broker
	// delivers the message again.
	mu.Lock()
	h := held
	mu.Unlock()
	require.ErrorIs(t, h.Ack(ctx), transport.ErrUnavailable)

	sentMu.Lock()
	all := append([]string(nil), sent...)
	t.Logf("sent %d messages (%d at the drop); %d sends failed during the outage (slowest failure %v)",
		len(all), atDrop, failed, slowestErr)
	require.Less(t, slowestErr, 2*time.Second, "a send during the outage must fail fast")
	sentMu.Unlock()
	waitFor("every sent message to be delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range all {
			if received[id] == 0 {
				return false
			}
		}
		return received[h.Message().ID()] >= 2
	})
	mu.Lock()
	dups := 0
	for _, n := range received {
		dups += n - 1
	}
	t.Logf("delivered %d distinct messages, %d redeliveries, %d acks refused after the drop", len(received), dups, ackErrs)
	require.NoError(t, badAck, "an Ack may fail only with ErrUnavailable")
	mu.Unlock()

	cancel()
	require.ErrorIs(t, <-recvDone, context.Canceled)
}

// A channel error (here an ack of an unknown delivery tag, which the broker
// answers by closing the channel) does not end the consumer: it opens a new
// channel and goes on; the message of the closed channel comes again.
func TestConsumerSurvivesChannelError(t *testing.T) {
	t.Parallel()
	tr := newTransport(t, Config{ReconnectDelay: 20 * time.Millisecond})
	topic := uniqueName("test.chanerr.")
	c, _ := subscribe(t, tr, topic)

	first := newMessage(topic, `1`)
	require.NoError(t, tr.Send(context.Background(), first))
	d := receive(t, c, waitLong)
	raw := d.(*Delivery).Raw()
	require.NoError(t, raw.Acknowledger.Ack(raw.DeliveryTag+1000, false)) // the broker closes the channel

	second := newMessage(topic, `2`)
	require.NoError(t, tr.Send(context.Background(), second))
	got := map[string]bool{}
	for len(got) < 2 {
		d := receive(t, c, waitLong)
		got[d.Message().ID()] = true
		require.NoError(t, d.Ack(context.Background()))
	}
	require.True(t, got[first.ID()] && got[second.ID()], "got %v", got)
	require.ErrorIs(t, d.Ack(context.Background()), transport.ErrUnavailable)
}
