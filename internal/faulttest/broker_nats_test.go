//go:build faults

package faulttest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/go-cap/cap/internal/testwait"
	capnats "github.com/go-cap/cap/transport/nats"
)

// natsServerBin is the machine's nats-server; CAP_FAULT_NATS_SERVER
// overrides it.
const natsServerBin = "/usr/sbin/nats-server"

func init() {
	brokerOpeners["nats"] = func(t *testing.T, _ *env) (brokerSide, error) {
		bin := getenv("CAP_FAULT_NATS_SERVER", natsServerBin)
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("nats-server not found (set CAP_FAULT_NATS_SERVER): %w", err)
		}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		n := &natsSide{bin: bin, dir: t.TempDir(), port: port}
		n.url = "nats://127.0.0.1:" + strconv.Itoa(port)
		if err := n.start(); err != nil {
			return nil, err
		}
		t.Cleanup(n.stop)
		return n, nil
	}
	extraScenarios = append(extraScenarios, natsScenarios)
}

// natsScenarios: a consumer killed every few seconds, and the server
// restarted mid-stream (its streams on file storage).
func natsScenarios(time.Duration) []scenario {
	b := backend{prefix: "nats-", transport: "nats"}
	return []scenario{b.killConsumer(), b.restartOnce("restart-broker", true, false, (*world).restartBroker)}
}

// natsSide is a nats-server of the run's own, with JetStream on file
// storage in a temporary directory, on a free loopback port, so that
// restarting it leaves the machine's shared server alone.
type natsSide struct {
	bin, dir, url string
	port          int
	cmd           *exec.Cmd
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (n *natsSide) args() []string { return []string{"-transport", "nats", "-broker", n.url} }

func (n *natsSide) canRestart() string { return "" }

func (n *natsSide) start() error {
	cmd := exec.Command(n.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-js", "-sd", n.dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start nats-server: %w", err)
	}
	n.cmd = cmd
	return n.wait(reachTimeout)
}

// stop ends the server gracefully (SIGTERM) and waits for it.
func (n *natsSide) stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = n.cmd.Process.Kill()
		<-done
	}
	n.cmd = nil
}

func (n *natsSide) restart(down time.Duration) error {
	return restartService(down, func() error { n.stop(); return nil }, n.start, n.wait)
}

// wait returns once the server answers JetStream requests.
func (n *natsSide) wait(d time.Duration) error {
	if err := testwait.Poll(d, n.ping); err != nil {
		return fmt.Errorf("nats-server at %s not ready after %v: %w", n.url, d, err)
	}
	return nil
}

func (n *natsSide) ping() error {
	nc, err := nats.Connect(n.url, nats.Timeout(2*time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

func (n *natsSide) ensureUp() error {
	if n.ping() == nil {
		return nil
	}
	if n.cmd != nil {
		n.stop()
	}
	return n.start()
}

// cleanup removes the scenario's stream (named after the topic's first
// word, the prefix) with its consumers.
func (n *natsSide) cleanup(_ string, _ []string, topic string) error {
	nc, err := nats.Connect(n.url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, capnats.StreamName(topic)); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	return nil
}
