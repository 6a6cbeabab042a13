//go:build faults

package faulttest_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/internal/testwait"
)

const (
	defaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	// reachTimeout bounds the wait for a restarted service.
	reachTimeout = 90 * time.Second
)

// env is what every scenario shares: the servers, the built programs and
// the run's names.
type env struct {
	t      *testing.T // TestFaults itself: what lives as long as the run
	dsn    string
	pool   *pgxpool.Pool
	bin    string // directory holding producer and consumer
	logDir string
	run    string // short random id in every name the run creates
	keep   bool   // CAP_FAULT_KEEP: leave schemas and queues for inspection
	// restart is empty when PostgreSQL can be restarted, else why not.
	restart string
	pgVer   string

	brokers map[string]brokerSide // opened by broker, by transport name

	// MariaDB, for the mariadb- scenarios (storage_mariadb_test.go).
	mysqlDSN string
	my       *sql.DB // opened by mariadb on first use
	myErr    error

	fdb *ferretDB // the mongodb- scenarios' server, started on first use
}

// brokerSide is what the harness needs of a transport's broker besides the
// programs' transport (faulttest.RegisterTransport): how to point the
// programs at it, how to restart it under them, and the clean-up. RabbitMQ's
// is in broker_rabbitmq_test.go; each other transport adds its own file that
// registers an opener in brokerOpeners from init, and its scenarios in
// extraScenarios.
type brokerSide interface {
	// args are the programs' flags that select and locate the broker
	// ("-transport", name, "-broker", address).
	args() []string
	// canRestart is empty when restart works here, else why not.
	canRestart() string
	// restart stops the broker for down, then starts it again and waits
	// until it accepts clients; the broker is started again whatever
	// happens in between.
	restart(down time.Duration) error
	// ensureUp brings a broker left down back, and waits for it.
	ensureUp() error
	// cleanup removes a scenario's objects on the broker: prefix is the
	// scenario's (the bus's group and topic prefix), groups the bus's
	// names of its groups, topic its topic after the prefix.
	cleanup(prefix string, groups []string, topic string) error
}

// brokerOpeners open the broker side of a transport, once per run, and
// return an error when the broker cannot be reached (the scenario then
// skips, or fails under CI). t is TestFaults itself: a side that must stop
// something at the end of the run registers it with t.Cleanup.
var brokerOpeners = map[string]func(t *testing.T, e *env) (brokerSide, error){}

// extraScenarios are the scenarios of the transports other than RabbitMQ,
// added from their files' init functions. Their names start with the
// transport's name ("kafka-kill-consumer"), so that
// -run 'TestFaults/kafka-' runs them alone.
var extraScenarios []func(long time.Duration) []scenario

// broker returns the side of the named transport, opening it on first use.
func (e *env) broker(t *testing.T, name string) brokerSide {
	t.Helper()
	if b, ok := e.brokers[name]; ok {
		return b
	}
	open, ok := brokerOpeners[name]
	if !ok {
		t.Fatalf("no broker side for transport %q", name)
	}
	b, err := open(e.t, e)
	if err != nil {
		unavailable(t, "%v", err)
	}
	e.brokers[name] = b
	return b
}

func ci() bool { return os.Getenv("CI") == "true" }

// unavailable skips the test, or fails it under CI, where a missing
// service is a failure.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	if ci() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

func getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{
		t:        t,
		dsn:      getenv("CAP_TEST_POSTGRES", defaultDSN),
		keep:     os.Getenv("CAP_FAULT_KEEP") != "",
		mysqlDSN: getenv("CAP_TEST_MYSQL", defaultMySQLDSN),
		brokers:  map[string]brokerSide{},
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	e.run = hex.EncodeToString(b)
	pool, err := pgxpool.New(context.Background(), e.dsn)
	require.NoError(t, err)
	e.pool = pool
	t.Cleanup(pool.Close)
	e.restart = e.canRestart()
	// A service left down by an interrupted earlier run comes back first.
	if e.restart == "" {
		if err := e.ensureUp(); err != nil {
			t.Logf("bringing the services up: %v", err)
		}
	}
	if err := e.waitPostgres(5 * time.Second); err != nil {
		unavailable(t, "PostgreSQL at CAP_TEST_POSTGRES=%q is unreachable: %v", e.dsn, err)
	}

	e.logDir = os.Getenv("CAP_FAULT_LOGDIR")
	if e.logDir == "" {
		e.logDir = t.TempDir()
	} else {
		e.logDir = filepath.Join(e.logDir, e.run)
		require.NoError(t, os.MkdirAll(e.logDir, 0o755))
	}
	e.bin = t.TempDir()
	args := []string{"build", "-o", e.bin + string(os.PathSeparator)}
	if os.Getenv("CAP_FAULT_RACE") != "" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/producer", "./cmd/consumer")
	start := time.Now()
	out, err := exec.Command("go", args...).CombinedOutput()
	require.NoError(t, err, "go %s: %s", strings.Join(args, " "), out)
	t.Logf("run %s: programs built in %v; logs in %s", e.run, time.Since(start).Round(time.Millisecond), e.logDir)
	return e
}

// canRestart says why PostgreSQL cannot be restarted here, or "".
func (e *env) canRestart() string {
	if pu, err := url.Parse(e.dsn); err != nil || !loopback(pu.Hostname()) {
		return "PostgreSQL is not on this machine"
	}
	if os.Geteuid() != 0 {
		return "restarting PostgreSQL needs root"
	}
	if _, err := exec.LookPath("pg_ctlcluster"); err != nil {
		return "pg_ctlcluster not found"
	}
	vers, err := os.ReadDir("/etc/postgresql")
	if err != nil || len(vers) == 0 {
		return "no PostgreSQL cluster under /etc/postgresql"
	}
	e.pgVer = vers[0].Name()
	return ""
}

// needRestart skips a scenario that restarts services where that is not
// possible (fails it under CI).
func (e *env) needRestart(t *testing.T, b brokerSide) {
	t.Helper()
	if e.restart != "" {
		unavailable(t, "%s", e.restart)
	}
	if why := b.canRestart(); why != "" {
		unavailable(t, "%s", why)
	}
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func command(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (e *env) pgctl(action string) error {
	return command("pg_ctlcluster", "--skip-systemctl-redirect", e.pgVer, "main", action)
}

// restartPostgres stops the cluster (fast mode: sessions are cut, open
// transactions roll back) for down, then starts it and waits until it
// accepts queries. The cluster is started again whatever happens.
func (e *env) restartPostgres(down time.Duration) error {
	return restartService(down, func() error { return e.pgctl("stop") }, func() error { return e.pgctl("start") },
		e.waitPostgres)
}

// restartService stops a service for down, then starts it and waits until
// it is reachable; once stopped, it is started again whatever happens.
func restartService(down time.Duration, stop, start func() error, wait func(time.Duration) error) (err error) {
	if err := stop(); err != nil {
		return err
	}
	defer func() {
		serr := start()
		werr := wait(reachTimeout)
		if err == nil {
			err = werr
		}
		if err != nil && serr != nil {
			err = fmt.Errorf("%w (start: %v)", err, serr)
		}
	}()
	time.Sleep(down) // time, not an event: the outage lasts down
	return nil
}

func (e *env) waitPostgres(d time.Duration) error {
	if err := testwait.Poll(d, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var one int
		return e.pool.QueryRow(ctx, `SELECT 1`).Scan(&one)
	}); err != nil {
		return fmt.Errorf("PostgreSQL not reachable %v after its restart: %w", d, err)
	}
	return nil
}

// ensureUp starts a service that is down (after an interrupted run) and
// waits for it; it reports what it could not bring back.
func (e *env) ensureUp() error {
	var errs []error
	for _, b := range e.brokers {
		errs = append(errs, b.ensureUp())
	}
	if err := e.waitPostgres(time.Second); err != nil {
		_ = e.pgctl("start")
		errs = append(errs, e.waitPostgres(reachTimeout))
	}
	if e.my != nil {
		errs = append(errs, e.ensureMariaDB())
	}
	if e.fdb != nil {
		errs = append(errs, e.ensureFerret())
	}
	return errors.Join(errs...)
}

func atoiEnv(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return v
	}
	return def
}
