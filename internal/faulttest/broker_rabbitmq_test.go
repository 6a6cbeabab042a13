//go:build faults

package faulttest_test

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/go-cap/cap/internal/testwait"
)

const defaultAMQP = "amqp://guest:guest@127.0.0.1:5672/"

func init() {
	brokerOpeners["rabbitmq"] = func(t *testing.T, _ *env) (brokerSide, error) {
		r := &rabbitSide{url: getenv("CAP_TEST_RABBITMQ", defaultAMQP)}
		conn, err := amqp.Dial(r.url)
		if err != nil {
			return nil, fmt.Errorf("RabbitMQ at CAP_TEST_RABBITMQ=%q is unreachable: %w", r.url, err)
		}
		_ = conn.Close()
		if r.canRestart() == "" {
			// A broker left down by an interrupted earlier run comes back first.
			if err := r.ensureUp(); err != nil {
				t.Logf("bringing RabbitMQ up: %v", err)
			}
		}
		return r, nil
	}
}

// rabbitSide is the machine's RabbitMQ, restarted with rabbitmqctl.
type rabbitSide struct{ url string }

func (r *rabbitSide) args() []string { return []string{"-transport", "rabbitmq", "-amqp", r.url} }

func (r *rabbitSide) canRestart() string {
	if pu, err := url.Parse(r.url); err != nil || !loopback(pu.Hostname()) {
		return "RabbitMQ is not on this machine"
	}
	if os.Geteuid() != 0 {
		return "restarting RabbitMQ needs root"
	}
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		return "rabbitmqctl not found"
	}
	return ""
}

// restart stops the broker's application for down, then starts it and
// waits until it accepts connections.
func (r *rabbitSide) restart(down time.Duration) error {
	return restartService(down, func() error { return command("rabbitmqctl", "stop_app") },
		func() error { return command("rabbitmqctl", "start_app") }, r.wait)
}

func (r *rabbitSide) wait(d time.Duration) error {
	if err := testwait.Poll(d, func() error {
		conn, err := amqp.DialConfig(r.url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
		if err == nil {
			_ = conn.Close()
		}
		return err
	}); err != nil {
		return fmt.Errorf("RabbitMQ not reachable %v after its restart: %w", d, err)
	}
	return nil
}

func (r *rabbitSide) ensureUp() error {
	if err := r.wait(time.Second); err == nil {
		return nil
	}
	_ = command("rabbitmqctl", "start_app")
	return r.wait(reachTimeout)
}

// cleanup removes the scenario's queues and its exchange (named as the
// prefix).
func (r *rabbitSide) cleanup(prefix string, queues []string, _ string) error {
	conn, err := amqp.Dial(r.url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	for _, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			return fmt.Errorf("delete queue %s: %w", q, err)
		}
	}
	if err := ch.ExchangeDelete(prefix, false, false); err != nil {
		return fmt.Errorf("delete exchange %s: %w", prefix, err)
	}
	return nil
}
