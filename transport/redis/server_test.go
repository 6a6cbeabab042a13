package redis

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// ownServer is a redis-server of the test's own, on a free loopback port,
// with every write fsynced to its append-only file, so that it can be
// killed and started again under a client with nothing lost.
type ownServer struct {
	t    *testing.T
	port int
	dir  string
	cmd  *exec.Cmd
}

func startOwnServer(t *testing.T) *ownServer {
	t.Helper()
	serverURL(t) // skips without Redis on the machine, as the other tests do
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skipf("no redis-server to start: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	s := &ownServer{t: t, port: port, dir: t.TempDir()}
	_ = bin
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *ownServer) url() string { return "redis://127.0.0.1:" + strconv.Itoa(s.port) + "/0" }

func (s *ownServer) start() {
	s.t.Helper()
	s.cmd = exec.Command("redis-server", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--appendonly", "yes", "--appendfsync", "always", "--dir", s.dir, "--save", "")
	require.NoError(s.t, s.cmd.Start())
	rdb := goredis.NewClient(&goredis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", s.port), MaxRetries: -1})
	defer rdb.Close()
	require.Eventually(s.t, func() bool {
		return rdb.Ping(context.Background()).Err() == nil
	}, 10*time.Second, 20*time.Millisecond, "redis-server on port %d did not start", s.port)
}

// kill stops the server with SIGKILL, as a crash would.
func (s *ownServer) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}
