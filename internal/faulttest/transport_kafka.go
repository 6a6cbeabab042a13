package faulttest

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-cap/cap/transport"
	"github.com/go-cap/cap/transport/kafka"
)

func init() { RegisterTransport("kafka", openKafka) }

// openKafka opens the Kafka transport on the brokers of -broker
// (comma-separated), with intervals short enough for the harness: a killed
// consumer's partitions move to the others within its session timeout (3 s).
// The client ID ends in the program's pid, by which the harness tells the
// members of dead programs (see expireDeadMembers in its tests).
func openKafka(c *Config, log *slog.Logger) (transport.Transport, error) {
	return kafka.New(kafka.Config{
		Brokers:           strings.Split(c.Broker, ","),
		ClientID:          c.Prefix + "-" + c.Instance + "-" + strconv.Itoa(os.Getpid()),
		HeartbeatInterval: 300 * time.Millisecond,
		SessionTimeout:    3 * time.Second,
		RebalanceTimeout:  5 * time.Second,
		RetryDelay:        200 * time.Millisecond,
		FetchMaxWait:      250 * time.Millisecond,
		DialTimeout:       2 * time.Second,
		ProduceTimeout:    3 * time.Second,
		Logger:            log,
	})
}
