package rabbitmq

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/transport"
)

// tlsProxy terminates TLS with a fresh self-signed certificate for
// 127.0.0.1 and forwards the bytes to the plain-text broker, standing in for
// a broker with a TLS listener. It returns the amqps URL and the pool that
// trusts the certificate.
func tlsProxy(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	broker, err := url.Parse(brokerURL(t))
	require.NoError(t, err)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "cap test broker"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AddCert(cert)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	})
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", broker.Host)
			if err != nil {
				_ = in.Close()
				continue
			}
			track(in)
			track(out)
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(out, in); _ = out.Close() }()
			go func() { defer wg.Done(); _, _ = io.Copy(in, out); _ = in.Close() }()
		}
	}()
	u := *broker
	u.Scheme = "amqps"
	u.Host = ln.Addr().String()
	return u.String(), roots
}

func TestTLS(t *testing.T) {
	t.Parallel()
	amqps, roots := tlsProxy(t)

	tr := newTransport(t, Config{URL: amqps, TLS: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}})
	topic := uniqueName("test.tls.")
	c, _ := subscribe(t, tr, topic)
	m := newMessage(topic, `"over TLS"`)
	require.NoError(t, tr.Send(context.Background(), m))
	d := receive(t, c, waitLong)
	require.Equal(t, m.ID(), d.Message().ID())
	require.NoError(t, d.Ack(context.Background()))

	// Without the certificate's issuer the handshake fails.
	untrusted := newTransport(t, Config{URL: amqps, DialTimeout: 2 * time.Second})
	require.ErrorIs(t, untrusted.Send(context.Background(), newMessage(topic, `1`)), transport.ErrUnavailable)
}
