//go:build faults

package faulttest_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/go-cap/cap/internal/testwait"
)

func init() {
	brokerOpeners["redis"] = openRedisSide
	extraScenarios = append(extraScenarios, func(time.Duration) []scenario {
		b := backend{prefix: "redis-", transport: "redis"}
		return []scenario{b.killConsumer(), b.restartOnce("restart-broker", true, false, (*world).restartBroker)}
	})
}

// redisSide is a redis-server of the harness's own on a free loopback port,
// with every write fsynced to its append-only file (the machine's Redis
// keeps nothing on disk, so a restart of it would lose the streams). It is
// killed with SIGKILL to restart it, and stopped when the run ends.
type redisSide struct {
	port int
	dir  string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

func openRedisSide(t *testing.T, _ *env) (brokerSide, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("redis-server not found: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	r := &redisSide{port: port, dir: t.TempDir()}
	t.Cleanup(r.stop)
	if err := r.start(); err != nil {
		return nil, err
	}
	if err := r.wait(10 * time.Second); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *redisSide) url() string { return "redis://127.0.0.1:" + strconv.Itoa(r.port) + "/0" }

func (r *redisSide) args() []string { return []string{"-transport", "redis", "-broker", r.url()} }

func (r *redisSide) canRestart() string { return "" }

func (r *redisSide) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return nil
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--appendonly", "yes", "--appendfsync", "always", "--dir", r.dir, "--save", "")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	r.cmd = cmd
	return nil
}

// stop kills the server, as a crash would.
func (r *redisSide) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

func (r *redisSide) restart(down time.Duration) error {
	return restartService(down, func() error { r.stop(); return nil }, r.start, r.wait)
}

func (r *redisSide) wait(d time.Duration) error {
	rdb := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.port), MaxRetries: -1})
	defer rdb.Close()
	if err := testwait.Poll(d, func() error { return rdb.Ping(context.Background()).Err() }); err != nil {
		return fmt.Errorf("redis-server on port %d not reachable %v after its start: %w", r.port, d, err)
	}
	return nil
}

func (r *redisSide) ensureUp() error {
	if err := r.start(); err != nil {
		return err
	}
	return r.wait(reachTimeout)
}

// cleanup deletes the scenario's streams, all named after its prefix.
func (r *redisSide) cleanup(prefix string, _ []string, _ string) error {
	rdb := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.port)})
	defer rdb.Close()
	ctx := context.Background()
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := rdb.Del(ctx, keys...).Err(); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}
