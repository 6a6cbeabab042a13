package kafka

import (
	"context"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage/memory"
	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/transporttest"
)

// promptly bounds a failure that must not wait for a timeout (the configs
// of these tests dial for up to 2 s and produce for up to 3 s).
const promptly = 2 * time.Second

// roundTrip checks cfg end to end through a new transport: Check passes,
// Subscribe creates and lists the topic, a sent message reaches the
// consumer group and its ack is accepted.
func roundTrip(t *testing.T, cfg Config) {
	t.Helper()
	tr := newTransport(t, cfg)
	require.NoError(t, tr.Check(ctxT(t, waitLong)))
	topic, group := uniqueName("sec.")+".ev", uniqueName("cap.queue.sec.")
	c, err := tr.Subscribe(ctxT(t, waitLong), group, []string{topic})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	m := newMessage(topic)
	require.NoError(t, tr.Send(ctxT(t, waitLong), m))
	d := receive(t, c, waitLong)
	require.Equal(t, m.ID(), d.Message().ID())
	require.Equal(t, m.Body, d.Message().Body)
	require.NoError(t, d.Ack(context.Background()))
}

// requireAuthFails checks that Check, Send and Subscribe with cfg each
// fail promptly with ErrAuth and not transport.ErrUnavailable, and returns
// Check's error.
func requireAuthFails(t *testing.T, cfg Config) error {
	t.Helper()
	tr := newTransport(t, cfg)
	var checkErr error
	for _, op := range []struct {
		name string
		do   func(context.Context) error
	}{
		{"check", func(ctx context.Context) error {
			checkErr = tr.Check(ctx)
			return checkErr
		}},
		{"send", func(ctx context.Context) error { return tr.Send(ctx, newMessage("sec.denied")) }},
		{"subscribe", func(ctx context.Context) error {
			c, err := tr.Subscribe(ctx, "cap.queue.denied", []string{"sec.denied"})
			if err == nil {
				_ = c.Close()
			}
			return err
		}},
	} {
		start := time.Now()
		err := op.do(ctxT(t, waitLong))
		require.ErrorIs(t, err, ErrAuth, op.name)
		require.NotErrorIs(t, err, transport.ErrUnavailable, "%s: %v", op.name, err)
		require.Less(t, time.Since(start), promptly, "%s: %v", op.name, err)
		t.Logf("%s: %v", op.name, err)
	}
	return checkErr
}

// SASL without TLS (SASL_PLAINTEXT): each mechanism authenticates every
// connection of the transport, and a wrong password is ErrAuth at once.
func TestSASL(t *testing.T) {
	t.Parallel()
	addrs := securedCluster(t, nil, true)
	for _, name := range saslMechanisms {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			roundTrip(t, securedConfig(addrs, nil, mechanism(t, name, saslUser, saslPassword)))
			err := requireAuthFails(t, securedConfig(addrs, nil, mechanism(t, name, saslUser, "wrong")))
			require.ErrorContains(t, err, "SASL Authentication Failed")
		})
	}
}

// TLS with a CA made by the test: a client that trusts the CA works end to
// end; one that does not, or that expects another name, fails the
// handshake with ErrAuth at once, the certificate error in the chain.
func TestTLS(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	addrs := securedCluster(t, &pki, false)
	t.Run("trusted", func(t *testing.T) {
		t.Parallel()
		roundTrip(t, securedConfig(addrs, pki.client, nil))
	})
	t.Run("unknown CA", func(t *testing.T) {
		t.Parallel()
		err := requireAuthFails(t, securedConfig(addrs, untrusted(t), nil))
		var unknown x509.UnknownAuthorityError
		require.ErrorAs(t, err, &unknown)
	})
	t.Run("other name", func(t *testing.T) {
		t.Parallel()
		tc := pki.client.Clone()
		tc.ServerName = "kafka.example.org"
		err := requireAuthFails(t, securedConfig(addrs, tc, nil))
		var host x509.HostnameError
		require.ErrorAs(t, err, &host)
	})
}

// TLS with client certificates (mutual TLS): the transport presents
// Config.TLS's certificate; without one the broker refuses the handshake,
// which is ErrAuth at once.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	c, err := newCluster(kfake.NumBrokers(1), kfake.TLS(pki.mtlsServer))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	t.Run("client certificate", func(t *testing.T) {
		t.Parallel()
		roundTrip(t, securedConfig(c.ListenAddrs(), pki.clientCert, nil))
	})
	t.Run("none", func(t *testing.T) {
		t.Parallel()
		err := requireAuthFails(t, securedConfig(c.ListenAddrs(), pki.client, nil))
		require.ErrorContains(t, err, "certificate required")
	})
}

// SASL over TLS (SASL_SSL), the usual set-up of a managed cluster: PLAIN
// and SCRAM work end to end; a wrong password, or the right one to a
// broker whose certificate is not trusted, is ErrAuth.
func TestSASLSSL(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	addrs := securedCluster(t, &pki, true)
	for _, name := range []string{"PLAIN", "SCRAM-SHA-512"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			roundTrip(t, securedConfig(addrs, pki.client, mechanism(t, name, saslUser, saslPassword)))
			err := requireAuthFails(t, securedConfig(addrs, pki.client, mechanism(t, name, saslUser, "wrong")))
			require.ErrorContains(t, err, "SASL Authentication Failed")
		})
	}
	t.Run("untrusted", func(t *testing.T) {
		t.Parallel()
		err := requireAuthFails(t, securedConfig(addrs, untrusted(t), mechanism(t, "SCRAM-SHA-512", saslUser, saslPassword)))
		var unknown x509.UnknownAuthorityError
		require.ErrorAs(t, err, &unknown)
	})
}

// The conformance suite passes over SASL_SSL (SCRAM-SHA-256) as it does in
// the clear.
func TestConformanceSASLSSL(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	addrs := securedCluster(t, &pki, true)
	transporttest.Run(t, transporttest.Harness{
		New: func(t *testing.T) transport.Transport {
			tr, err := New(securedConfig(addrs, pki.client, mechanism(t, "SCRAM-SHA-256", saslUser, saslPassword)))
			if err != nil {
				t.Fatal(err)
			}
			return tr
		},
		Caps: transporttest.Capabilities{Wildcards: true, Redelivery: true, Durable: true},
	})
}

// Check over SASL_SSL sends a metadata request: nil while the broker
// answers, even when an earlier bootstrap broker is down; once the broker
// is gone, ErrUnavailable (not ErrAuth) at once.
func TestCheckBrokerGone(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	opts := securedClusterOpts(&pki, true)
	c, err := newCluster(opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())

	cfg := securedConfig(append([]string{dead}, c.ListenAddrs()...), pki.client,
		mechanism(t, "SCRAM-SHA-256", saslUser, saslPassword))
	tr := newTransport(t, cfg)
	require.NoError(t, tr.Check(ctxT(t, waitLong)), "the second broker answers")

	c.Close()
	start := time.Now()
	err = tr.Check(ctxT(t, waitLong))
	require.ErrorIs(t, err, transport.ErrUnavailable)
	require.NotErrorIs(t, err, ErrAuth)
	require.Less(t, time.Since(start), promptly)
}

// A bus whose credentials the broker refuses does not start: Start fails
// with ErrAuth, and Health reports the transport unhealthy with the reason.
func TestBusWithBadCredentials(t *testing.T) {
	t.Parallel()
	pki := newPKI(t)
	addrs := securedCluster(t, &pki, true)
	tr := newTransport(t, securedConfig(addrs, pki.client, mechanism(t, "SCRAM-SHA-512", saslUser, "wrong")))
	bus, err := cap.New(memory.New(), tr, cap.Options{Logger: testLogger()})
	require.NoError(t, err)
	require.NoError(t, cap.Subscribe(bus, "sec.orders", "billing", func(context.Context, cap.Msg[map[string]int]) error {
		return nil
	}))
	start := time.Now()
	err = bus.Start(ctxT(t, waitLong))
	require.ErrorIs(t, err, ErrAuth)
	require.Less(t, time.Since(start), promptly)
	t.Cleanup(func() { _ = bus.Shutdown(context.Background()) })

	h := bus.Health(ctxT(t, waitLong))
	require.False(t, h.Healthy)
	require.False(t, h.Transport.Healthy)
	require.True(t, strings.Contains(h.Transport.Error, ErrAuth.Error()), h.Transport.Error)
}

// A broker that accepts connections and never answers does not hold Check
// past its context: ErrUnavailable when the context's deadline passes or
// the context is cancelled, although the dial timeout is longer.
func TestCheckSilentBroker(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	accepted := make(chan net.Conn, 16)
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		for c := range accepted {
			_ = c.Close()
		}
	})
	cfg := configFor([]string{ln.Addr().String()})
	cfg.DialTimeout = 10 * time.Second
	tr := newTransport(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = tr.Check(ctx)
	require.ErrorIs(t, err, transport.ErrUnavailable)
	require.Less(t, time.Since(start), promptly)

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start = time.Now()
	err = tr.Check(ctx)
	require.ErrorIs(t, err, transport.ErrUnavailable)
	require.Less(t, time.Since(start), promptly)
}
