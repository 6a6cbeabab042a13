package faulttest

import (
	"log/slog"
	"time"

	"github.com/go-cap/cap/transport"
	capnats "github.com/go-cap/cap/transport/nats"
)

func init() { RegisterTransport("nats", openNATS) }

// openNATS opens the NATS JetStream transport on c.Broker. The scenario's
// topics share the stream named after the prefix, their first word.
func openNATS(c *Config, log *slog.Logger) (transport.Transport, error) {
	return capnats.New(capnats.Config{
		URL:           c.Broker,
		Name:          c.Prefix + " " + c.Instance,
		ReconnectWait: 100 * time.Millisecond,
		Logger:        log,
	})
}
