package kafka

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// The SASL users of the secured test clusters: one per mechanism, all
// with saslPassword.
const (
	saslUser     = "cap"
	saslPassword = "s3cret"
)

// saslMechanisms are the mechanisms kfake and kafka-go both speak.
var saslMechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

// mechanism returns kafka-go's client side of a SASL mechanism.
func mechanism(t testing.TB, name, user, pass string) sasl.Mechanism {
	t.Helper()
	switch name {
	case "PLAIN":
		return plain.Mechanism{Username: user, Password: pass}
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		algo := scram.SHA256
		if name == "SCRAM-SHA-512" {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, user, pass)
		require.NoError(t, err)
		return m
	}
	t.Fatalf("unknown SASL mechanism %q", name)
	return nil
}

// testPKI is a certificate authority made for one test, a broker
// certificate it signed for 127.0.0.1 and localhost, and a client
// certificate it signed.
type testPKI struct {
	// server is the broker's TLS config; client trusts the CA.
	server, client *tls.Config
	// mtlsServer also requires a client certificate the CA signed;
	// clientCert is client presenting one.
	mtlsServer, clientCert *tls.Config
}

func newPKI(t testing.TB) testPKI { return newNamedPKI(t, "cap test CA") }

// newNamedPKI is newPKI with a CA of the given common name.
func newNamedPKI(t testing.TB, caName string) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: caName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kfake"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)

	clientKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	clientTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: "cap client"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	clientDER, err := x509.CreateCertificate(rand.Reader, clientTmpl, ca, &clientKey.PublicKey, caKey)
	require.NoError(t, err)

	roots := x509.NewCertPool()
	roots.AddCert(ca)
	p := testPKI{
		server: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}},
			MinVersion:   tls.VersionTLS12,
		},
		client: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}
	p.mtlsServer = p.server.Clone()
	p.mtlsServer.ClientAuth = tls.RequireAndVerifyClientCert
	p.mtlsServer.ClientCAs = roots
	p.clientCert = p.client.Clone()
	p.clientCert.Certificates = []tls.Certificate{{Certificate: [][]byte{clientDER}, PrivateKey: clientKey}}
	return p
}

// untrusted returns a client TLS config that trusts only a CA of its own,
// not the one that signed the broker's certificate.
func untrusted(t testing.TB) *tls.Config {
	return newNamedPKI(t, "another CA").client
}

// securedCluster starts a one-broker kfake cluster for the test, with TLS
// when pki is not nil and with SASL (a superuser per mechanism) when
// withSASL, and returns its addresses.
func securedCluster(t testing.TB, pki *testPKI, withSASL bool) []string {
	t.Helper()
	c, err := newCluster(securedClusterOpts(pki, withSASL)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// securedClusterOpts returns the options of securedCluster.
func securedClusterOpts(pki *testPKI, withSASL bool) []kfake.Opt {
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	if pki != nil {
		opts = append(opts, kfake.TLS(pki.server))
	}
	if withSASL {
		opts = append(opts, kfake.EnableSASL())
		for _, m := range saslMechanisms {
			opts = append(opts, kfake.Superuser(m, saslUser, saslPassword))
		}
	}
	return opts
}

// securedConfig returns the test config for brokers with tlsCfg and mech.
func securedConfig(brokers []string, tlsCfg *tls.Config, mech sasl.Mechanism) Config {
	cfg := configFor(brokers)
	cfg.TLS = tlsCfg
	cfg.SASL = mech
	return cfg
}
