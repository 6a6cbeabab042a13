//go:build faults

package faulttest_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/go-cap/cap/internal/faulttest"
	"github.com/go-cap/cap/internal/testwait"
)

// The mariadb- scenarios run the programs on MariaDB (storage/mysql) with
// RabbitMQ as the transport, which they never restart:
//
//	CAP_FAULT_DURATION=30s go test -tags=faults -run 'TestFaults/mariadb-' -v -count=1 ./internal/faulttest/
//
// mariadb-restart-mariadb stops the machine's mariadbd (SIGTERM: sessions
// are cut, open transactions roll back) and starts it again.
const (
	defaultMySQLDSN = "root@tcp(127.0.0.1:3306)/test?parseTime=true&interpolateParams=true"
	mariadbd        = "/usr/sbin/mariadbd"
	mariadbPidFile  = "/run/mysqld/mysqld.pid"
)

func init() {
	extraScenarios = append(extraScenarios, func(time.Duration) []scenario {
		b := backend{prefix: "mariadb-", storage: "mysql"}
		return []scenario{
			b.killProducer(),
			b.killConsumer(),
			b.restartOnce("restart-mariadb", true, true, (*world).restartMariaDB),
			b.threeInstances(),
		}
	})
}

// mariadb returns the harness's connection to MariaDB, opening it on first
// use; it skips the test (fails it in CI) when MariaDB is unreachable.
func (e *env) mariadb(t *testing.T) *sql.DB {
	t.Helper()
	if e.my == nil && e.myErr == nil {
		db, err := sql.Open("mysql", e.mysqlDSN)
		if err == nil {
			db.SetMaxOpenConns(4)
			e.my = db
			e.t.Cleanup(func() { _ = db.Close() })
			err = e.waitMariaDB(5 * time.Second)
		}
		e.myErr = err
	}
	if e.myErr != nil {
		unavailable(t, "MariaDB at CAP_TEST_MYSQL=%q is unreachable: %v", e.mysqlDSN, e.myErr)
	}
	return e.my
}

// needMariaDBRestart skips a scenario that restarts MariaDB where that is
// not possible (fails it under CI).
func (e *env) needMariaDBRestart(t *testing.T) {
	t.Helper()
	cfg, err := driver.ParseDSN(e.mysqlDSN)
	host := ""
	if err == nil {
		host, _, _ = strings.Cut(cfg.Addr, ":")
	}
	switch {
	case err != nil || !loopback(host):
		unavailable(t, "MariaDB is not on this machine")
	case os.Geteuid() != 0:
		unavailable(t, "restarting MariaDB needs root")
	}
	if _, err := os.Stat(mariadbd); err != nil {
		unavailable(t, "%s not found", mariadbd)
	}
	if _, err := mariadbPid(); err != nil {
		unavailable(t, "no running mariadbd: %v", err)
	}
}

func mariadbPid() (int, error) {
	b, err := os.ReadFile(mariadbPidFile)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// stopMariaDB sends mariadbd SIGTERM, which cuts the sessions and rolls
// open transactions back, and waits for the process to end.
func stopMariaDB() error {
	pid, err := mariadbPid()
	if err != nil {
		return fmt.Errorf("mariadbd pid: %w", err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop mariadbd %d: %w", pid, err)
	}
	if testwait.Poll(reachTimeout, func() error {
		if syscall.Kill(pid, 0) == nil {
			return errRunning
		}
		return nil
	}) != nil {
		return fmt.Errorf("mariadbd %d still running %v after SIGTERM", pid, reachTimeout)
	}
	return nil
}

var errRunning = errors.New("running")

// startMariaDB starts mariadbd as the machine's service runs it (its
// configuration drops to the mysql user), detached from the test.
func startMariaDB() error {
	cmd := exec.Command(mariadbd)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start mariadbd: %w", err)
	}
	return cmd.Process.Release()
}

// restartMariaDB stops mariadbd for down, then starts it and waits until
// it accepts queries. It is started again whatever happens.
func (e *env) restartMariaDB(down time.Duration) error {
	return restartService(down, stopMariaDB, startMariaDB, e.waitMariaDB)
}

func (e *env) waitMariaDB(d time.Duration) error {
	if err := testwait.Poll(d, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return e.my.PingContext(ctx)
	}); err != nil {
		return fmt.Errorf("MariaDB not reachable %v after its restart: %w", d, err)
	}
	return nil
}

// ensureMariaDB starts a mariadbd left down by an interrupted restart.
func (e *env) ensureMariaDB() error {
	if e.waitMariaDB(time.Second) == nil {
		return nil
	}
	if _, err := mariadbPid(); err != nil {
		_ = startMariaDB()
	}
	return e.waitMariaDB(reachTimeout)
}

func (w *world) restartMariaDB() {
	w.event("mariadb-restart")
	start := time.Now()
	if err := w.e.restartMariaDB(w.between(1500*time.Millisecond, 3*time.Second)); err != nil {
		w.t.Errorf("restart MariaDB: %v", err)
		return
	}
	w.t.Logf("MariaDB restarted: %v without a database", time.Since(start).Round(100*time.Millisecond))
}

func (w *world) mysqlTable(name string) string { return faulttest.MySQLTable(w.schema, name) }

// dropMySQL drops the scenario's cap and business tables.
func (w *world) dropMySQL(ctx context.Context) error {
	names := []string{"`" + w.schema + ".published`", "`" + w.schema + ".received`"}
	for _, n := range []string{"order_n", "orders", "rolled_back", "handled"} {
		names = append(names, w.mysqlTable(n))
	}
	_, err := w.e.my.ExecContext(ctx, `DROP TABLE IF EXISTS `+strings.Join(names, ", "))
	return err
}

// statsMySQL is stats on MariaDB: the same figures from the same tables.
func (w *world) statsMySQL(ctx context.Context) (stats, error) {
	orders, handled, rolled := w.mysqlTable("orders"), w.mysqlTable("handled"), w.mysqlTable("rolled_back")
	both := `EXISTS (SELECT 1 FROM ` + handled + ` h WHERE h.grp = '` + faulttest.GroupPlain + `' AND h.n = o.n)
		AND EXISTS (SELECT 1 FROM ` + handled + ` h WHERE h.grp = '` + faulttest.GroupInbox + `' AND h.n = o.n)`
	pending := func(t string) string {
		return "(SELECT COUNT(*) FROM `" + w.schema + "." + t + "` WHERE `NextAttemptAt` IS NOT NULL OR `StatusName` <> 'Succeeded')"
	}
	dups := func(group string) string {
		return `(SELECT COUNT(*) - COUNT(DISTINCT n) FROM ` + handled + ` WHERE grp = '` + group + `')`
	}
	var s stats
	err := w.e.my.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM `+orders+`),
		(SELECT COUNT(*) FROM `+orders+` o WHERE `+both+`),
		(SELECT COUNT(*) FROM `+orders+` o WHERE NOT (`+both+`)),
		(SELECT COUNT(DISTINCT n) FROM `+handled+` h WHERE NOT EXISTS (SELECT 1 FROM `+orders+` o WHERE o.n = h.n)),
		`+dups(faulttest.GroupPlain)+`,
		`+dups(faulttest.GroupInbox)+`,
		(SELECT COUNT(*) FROM `+rolled+`),
		(SELECT COUNT(*) FROM `+rolled+` r JOIN `+orders+` o USING (n)),
		`+pending("published")+`,
		`+pending("received")).Scan(&s.Committed, &s.Handled, &s.Lost, &s.RolledBackHandled, &s.Duplicates,
		&s.InboxDuplicates, &s.RolledBack, &s.RolledBackCommit, &s.PendingPublished, &s.PendingReceived)
	return s, err
}

// explainMySQL logs what is known of the messages a check found wrong.
func (w *world) explainMySQL(ctx context.Context) {
	queries := map[string]string{
		"lost orders": `SELECT o.n, o.producer, o.via FROM ` + w.mysqlTable("orders") + ` o
			WHERE NOT EXISTS (SELECT 1 FROM ` + w.mysqlTable("handled") + ` h WHERE h.grp = 'plain' AND h.n = o.n)
				OR NOT EXISTS (SELECT 1 FROM ` + w.mysqlTable("handled") + ` h WHERE h.grp = 'inbox' AND h.n = o.n)
			ORDER BY o.n LIMIT 10`,
		"unfinished published rows": "SELECT `Id`, `StatusName`, `Retries`, COALESCE(`NextAttemptAt`, '-') FROM `" + w.schema +
			".published` WHERE `NextAttemptAt` IS NOT NULL OR `StatusName` <> 'Succeeded' LIMIT 10",
		"unfinished received rows": "SELECT `Id`, `Group`, `StatusName`, `Retries`, COALESCE(`NextAttemptAt`, '-') FROM `" + w.schema +
			".received` WHERE `NextAttemptAt` IS NOT NULL OR `StatusName` <> 'Succeeded' LIMIT 10",
		"inbox duplicates": `SELECT n, GROUP_CONCAT(CONCAT(instance, ' ', msg_id, ' ', at) SEPARATOR ', ') FROM ` +
			w.mysqlTable("handled") + ` WHERE grp = 'inbox' GROUP BY n HAVING COUNT(*) > 1 LIMIT 10`,
	}
	for title, q := range queries {
		rows, err := w.e.my.QueryContext(ctx, q)
		if err != nil {
			w.t.Logf("%s: %v", title, err)
			continue
		}
		cols, _ := rows.Columns()
		var lines []string
		for rows.Next() {
			vals := make([]sql.NullString, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if rows.Scan(ptrs...) != nil {
				break
			}
			var parts []string
			for _, v := range vals {
				parts = append(parts, v.String)
			}
			lines = append(lines, strings.Join(parts, " "))
		}
		_ = rows.Close()
		if len(lines) > 0 {
			w.t.Logf("%s:\n  %s", title, strings.Join(lines, "\n  "))
		}
	}
	for _, p := range append(append([]*proc{}, w.producers...), w.consumers...) {
		w.t.Logf("end of %s:\n%s", p.log.Name(), p.tail(25))
	}
}
