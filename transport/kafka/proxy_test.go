package kafka

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/go-cap/cap/internal/testwait"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// proxy forwards TCP connections from its own address to a backend and can
// cut every connection and refuse new ones until restored.
type proxy struct {
	ln      net.Listener
	backend string

	mu      sync.Mutex
	down    bool
	conns   map[net.Conn]struct{}
	cutDone int
}

func newProxy(t *testing.T) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { _ = ln.Close(); p.cut() })
	go p.accept()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down, backend := p.down, p.backend
		p.mu.Unlock()
		if down {
			_ = c.Close()
			continue
		}
		b, err := net.Dial("tcp", backend)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[b] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go func() { _, _ = io.Copy(b, c); _ = b.Close(); _ = c.Close() }()
		go func() { _, _ = io.Copy(c, b); _ = b.Close(); _ = c.Close() }()
	}
}

// cut closes every connection and refuses new ones.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
	p.cutDone++
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// addrListener is kfake's listener with the proxy's address, so that the
// broker advertises the proxy in its metadata.
type addrListener struct {
	net.Listener
	addr net.Addr
}

func (l addrListener) Addr() net.Addr { return l.addr }

// proxiedCluster starts a one-broker kfake cluster reached only through a
// proxy.
func proxiedCluster(t *testing.T) *proxy {
	p := newProxy(t)
	c, err := newCluster(kfake.NumBrokers(1), kfake.ListenFn(func(network, address string) (net.Listener, error) {
		ln, err := net.Listen(network, address)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		p.backend = ln.Addr().String()
		p.mu.Unlock()
		return addrListener{ln, p.ln.Addr()}, nil
	}))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return p
}

// The connections drop mid-stream twice, for a second each, while a
// producer sends and a consumer acks: sends fail with ErrUnavailable during
// the cut and succeed when retried after it, the consumer resumes by itself,
// and every message sent arrives.
func TestConnectionCutsLoseNothing(t *testing.T) {
	t.Parallel()
	p := proxiedCluster(t)
	cfg := testConfig(t)
	cfg.Brokers = []string{p.addr()}
	cfg.DialTimeout = 500 * time.Millisecond
	cfg.ProduceTimeout = time.Second
	cfg.SessionTimeout = time.Second
	prod, cons := newTransport(t, cfg), newTransport(t, cfg)
	topic, group := uniqueName("cut.")+".ev", uniqueName("cap.queue.cut.")
	c, err := cons.Subscribe(context.Background(), group, []string{topic})
	require.NoError(t, err)

	var mu sync.Mutex
	got := map[string]bool{}
	go func() {
		for {
			d, err := c.Receive(context.Background())
			if err != nil {
				return
			}
			mu.Lock()
			got[d.Message().ID()] = true
			mu.Unlock()
			_ = d.Ack(context.Background())
		}
	}()

	sent := map[string]bool{}
	unavailable := 0
	stop := make(chan struct{})
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			msgs := []*message.Message{newMessage(topic), newMessage(topic), newMessage(topic)}
			for {
				errs := prod.SendBatch(context.Background(), msgs)
				if errs == nil {
					break
				}
				for _, err := range errs {
					if err != nil {
						require.ErrorIs(t, err, transport.ErrUnavailable)
						unavailable++
						break
					}
				}
				// Time, not an event: the producer's retry interval while
				// a cut lasts and kafka-go reconnects after it.
				time.Sleep(100 * time.Millisecond)
			}
			for _, m := range msgs {
				sent[m.ID()] = true
			}
			// Time, not an event: the producer's sending rate.
			time.Sleep(10 * time.Millisecond)
		}
	}()
	received := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	// progress waits until the consumer has received 30 more messages.
	progress := func() {
		base := received()
		testwait.Until(t, 30*time.Second, func() bool { return received() >= base+30 }, "the consumer made no progress")
	}
	for range 2 {
		// Cut while the group is stable and records flow. (A cut during
		// the rejoin that follows a cut can leave kfake with a member
		// whose JoinGroup reply was lost: kfake then never expires it,
		// and its partitions stay unconsumed. A real broker expires it
		// after the session timeout.)
		progress()
		p.cut()
		time.Sleep(time.Second) // time, not an event: the outage lasts a second
		p.restore()
	}
	progress()
	close(stop)
	<-sendDone
	require.Positive(t, unavailable, "some sends hit a cut")

	testwait.UntilNil(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		missing := 0
		for id := range sent {
			if !got[id] {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d messages not received", missing, len(sent))
		}
		return nil
	})
	t.Logf("%d messages, %d failed send attempts", len(sent), unavailable)
}
