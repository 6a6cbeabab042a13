//go:build faults

package faulttest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/go-cap/cap/internal/faulttest"
	"github.com/go-cap/cap/internal/testwait"
	"github.com/go-cap/cap/storage/mongodb"
)

// The mongodb- scenarios run the programs on MongoDB (storage/mongodb)
// with RabbitMQ as the transport, which they never restart:
//
//	CAP_FAULT_DURATION=30s go test -tags=faults -run 'TestFaults/mongodb-' -v -count=1 ./internal/faulttest/
//
// The MongoDB server is FerretDB 1.24 on its SQLite handler, in a process
// of the harness's own (storage/mongodb/testdata/ferretserver) on a fixed
// loopback port; mongodb-restart-ferretdb SIGKILLs it and starts it again
// on the same files and port. FerretDB has no multi-document transactions,
// so the programs publish without a business transaction (the producer
// records an order once Publish returned) and the consumer has no inbox
// group: these scenarios test that no published message is lost, not the
// rollback or the inbox, and their FAULT lines say inbox_duplicates=n/a.
func init() {
	extraScenarios = append(extraScenarios, func(time.Duration) []scenario {
		b := backend{prefix: "mongodb-", storage: "mongodb"}
		return []scenario{
			b.killProducer(),
			b.killConsumer(),
			b.restartOnce("restart-ferretdb", false, true, (*world).restartFerret),
			b.threeInstances(),
		}
	})
}

// ferretDB is the harness's MongoDB server: a ferretserver process on a
// fixed address and a directory of SQLite files that outlive it.
type ferretDB struct {
	bin, dir, addr, logPath string
	client                  *mongo.Client // the harness's own, for the checks

	mu    sync.Mutex
	cmd   *exec.Cmd
	stdin io.WriteCloser // closing it stops the server
	uri   string
}

// ferret returns the harness's FerretDB, building and starting it on first
// use; it fails the test when it cannot (FerretDB is built here, so it is
// never missing).
func (e *env) ferret(t *testing.T) *ferretDB {
	t.Helper()
	if e.fdb != nil {
		return e.fdb
	}
	f := &ferretDB{bin: filepath.Join(e.bin, "ferretserver"), dir: e.t.TempDir(),
		logPath: filepath.Join(e.logDir, "ferretdb.log")}
	start := time.Now()
	out, err := exec.Command("go", "build", "-o", f.bin, "../../storage/mongodb/testdata/ferretserver").CombinedOutput()
	require.NoError(t, err, "build ferretserver: %s", out)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err, "pick a port")
	f.addr = l.Addr().String()
	_ = l.Close()
	require.NoError(t, f.start(), "start FerretDB")
	e.t.Cleanup(f.stop)
	f.client, err = mongo.Connect(options.Client().ApplyURI(f.uri).SetTimeout(20 * time.Second))
	require.NoError(t, err, "connect to FerretDB")
	e.t.Cleanup(func() { _ = f.client.Disconnect(context.Background()) })
	t.Logf("FerretDB at %s (SQLite files in %s), built and started in %v", f.uri, f.dir,
		time.Since(start).Round(time.Millisecond))
	e.fdb = f
	return f
}

// start starts the server and waits for its URI; the server is up then.
func (f *ferretDB) start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(f.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(f.bin, "-handler", "sqlite", "-sqlite-url", "file:"+f.dir+"/", "-listen", f.addr)
	cmd.Stderr = logf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("FerretDB printed no URI: %w (log: %s)", err, f.logPath)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	f.cmd, f.stdin, f.uri = cmd, stdin, strings.TrimSpace(line)
	return nil
}

// kill SIGKILLs the server: what it had not written to its files is lost,
// as in a crash.
func (f *ferretDB) kill() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cmd == nil {
		return errors.New("FerretDB is not running")
	}
	_ = f.cmd.Process.Kill()
	_ = f.cmd.Wait()
	f.cmd = nil
	return nil
}

func (f *ferretDB) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cmd == nil {
		return
	}
	_ = f.stdin.Close()
	done := make(chan struct{})
	go func() { _ = f.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = f.cmd.Process.Kill()
		<-done
	}
	f.cmd = nil
}

func (f *ferretDB) wait(d time.Duration) error {
	if err := testwait.Poll(d, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return f.client.Ping(ctx, nil)
	}); err != nil {
		return fmt.Errorf("FerretDB not reachable %v after its start: %w", d, err)
	}
	return nil
}

// ensureFerret starts a FerretDB left down, and waits for it.
func (e *env) ensureFerret() error {
	if err := e.fdb.start(); err != nil {
		return err
	}
	return e.fdb.wait(reachTimeout)
}

func (w *world) restartFerret() {
	w.event("ferretdb-kill")
	start := time.Now()
	f := w.e.fdb
	err := restartService(w.between(1500*time.Millisecond, 3*time.Second), f.kill, f.start, f.wait)
	if err != nil {
		w.t.Errorf("restart FerretDB: %v", err)
		return
	}
	w.t.Logf("FerretDB killed and started again: %v without a database", time.Since(start).Round(100*time.Millisecond))
}

// mongoDB is the scenario's database on FerretDB (the storage's collections).
func (w *world) mongoDB() *mongo.Database { return w.e.fdb.client.Database(w.schema) }

// pendingMongo counts the documents of a collection not Succeeded or
// still due.
func (w *world) pendingMongo(ctx context.Context, coll string) (int64, error) {
	return w.mongoDB().Collection(coll).CountDocuments(ctx, bson.M{"$or": bson.A{
		bson.M{"NextAttemptAt": bson.M{"$ne": nil}},
		bson.M{"StatusName": bson.M{"$ne": "Succeeded"}},
	}})
}

// statsMongo reads the business side from PostgreSQL, as for a
// PostgreSQL run, with the plain group only; a handled order with no row
// and not rolled back is unconfirmed (its producer was killed between
// Publish's return and the row, or stopped during a Publish whose document
// was written), and a handled rolled-back number is one
// that was never published.
func (w *world) statsMongo(ctx context.Context) (stats, error) {
	orders, handled, rolled := w.table("orders"), w.table("handled"), w.table("rolled_back")
	plain := `EXISTS (SELECT 1 FROM ` + handled + ` h WHERE h.grp = '` + faulttest.GroupPlain + `' AND h.n = o.n)`
	s := stats{noInbox: true}
	err := w.e.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM `+orders+`),
		(SELECT count(*) FROM `+orders+` o WHERE `+plain+`),
		(SELECT count(*) FROM `+orders+` o WHERE NOT `+plain+`),
		(SELECT count(DISTINCT n) FROM `+handled+` h WHERE EXISTS (SELECT 1 FROM `+rolled+` r WHERE r.n = h.n)),
		(SELECT count(DISTINCT n) FROM `+handled+` h WHERE NOT EXISTS (SELECT 1 FROM `+orders+` o WHERE o.n = h.n)
			AND NOT EXISTS (SELECT 1 FROM `+rolled+` r WHERE r.n = h.n)),
		(SELECT count(*) - count(DISTINCT n) FROM `+handled+` WHERE grp = '`+faulttest.GroupPlain+`'),
		(SELECT count(*) FROM `+rolled+`),
		(SELECT count(*) FROM `+rolled+` r JOIN `+orders+` o USING (n))`).Scan(&s.Committed, &s.Handled, &s.Lost,
		&s.RolledBackHandled, &s.Unconfirmed, &s.Duplicates, &s.RolledBack, &s.RolledBackCommit)
	if err != nil {
		return s, err
	}
	if s.PendingPublished, err = w.pendingMongo(ctx, mongodb.DefaultPublished); err != nil {
		return s, err
	}
	s.PendingReceived, err = w.pendingMongo(ctx, mongodb.DefaultReceived)
	return s, err
}

// explainMongo logs the lost orders and the unfinished documents.
func (w *world) explainMongo(ctx context.Context) {
	rows, err := w.e.pool.Query(ctx, `SELECT o.n, o.producer FROM `+w.table("orders")+` o
		WHERE NOT EXISTS (SELECT 1 FROM `+w.table("handled")+` h WHERE h.grp = 'plain' AND h.n = o.n) ORDER BY o.n LIMIT 10`)
	if err == nil {
		var lost []string
		for rows.Next() {
			var n int64
			var producer string
			if rows.Scan(&n, &producer) == nil {
				lost = append(lost, fmt.Sprintf("%d (%s)", n, producer))
			}
		}
		rows.Close()
		w.t.Logf("lost orders: %v", lost)
	}
	for _, coll := range []string{mongodb.DefaultPublished, mongodb.DefaultReceived} {
		cur, err := w.mongoDB().Collection(coll).Find(ctx, bson.M{"$or": bson.A{
			bson.M{"NextAttemptAt": bson.M{"$ne": nil}},
			bson.M{"StatusName": bson.M{"$ne": "Succeeded"}},
		}}, options.Find().SetLimit(10).SetProjection(bson.M{"Content": 0}))
		if err != nil {
			w.t.Logf("unfinished %s: %v", coll, err)
			continue
		}
		var docs []bson.M
		_ = cur.All(ctx, &docs)
		if len(docs) > 0 {
			w.t.Logf("unfinished %s: %v", coll, docs)
		}
	}
	for _, p := range append(append([]*proc{}, w.producers...), w.consumers...) {
		w.t.Logf("end of %s:\n%s", p.log.Name(), p.tail(25))
	}
}
