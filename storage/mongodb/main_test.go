package mongodb_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/go-cap/cap/storage/mongodb"
)

// The server the tests run on: CAP_TEST_MONGO when set (a replica set runs
// the transactional subtests too), else FerretDB on SQLite in a temporary
// directory, started once for the package: embedded, or under -race in a
// process of its own built without the race detector.
var (
	serverURI string
	ferret    bool // the server is the FerretDB TestMain started
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if uri := os.Getenv("CAP_TEST_MONGO"); uri != "" {
		serverURI = uri
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "cap-ferretdb-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// FerretDB on SQLite in a temporary directory; CAP_TEST_FERRETDB=pg
	// runs it on its PostgreSQL handler on CAP_TEST_POSTGRES (each test
	// database a schema of its own there).
	handler, pgURL := "sqlite", os.Getenv("CAP_TEST_POSTGRES")
	if pgURL == "" {
		pgURL = "postgres://postgres@127.0.0.1:5432/test"
	}
	if os.Getenv("CAP_TEST_FERRETDB") == "pg" {
		handler = "postgresql"
	}
	if raceEnabled {
		uri, stop, err := startFerretProcess(dir, handler, pgURL)
		if err != nil {
			fmt.Fprintln(os.Stderr, "ferretdb:", err)
			return 1
		}
		defer stop()
		serverURI, ferret = uri, true
		return m.Run()
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Handler:       handler,
		SQLiteURL:     "file:" + dir + "/",
		PostgreSQLURL: pgURL,
		Logger:        ferretLogger(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx)
	}()
	defer func() { cancel(); <-done }()
	serverURI = f.MongoDBURI()
	ferret = true
	return m.Run()
}

// ferretLogger is the embedded FerretDB's: its PostgreSQL handler logs
// every refused insert (a duplicate key, which the storage expects) as an
// error, and clients get every error anyway.
func ferretLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 1}))
}

// startFerretProcess builds testdata/ferretserver without the race
// detector and runs it on the handler: under -race an embedded FerretDB
// is instrumented too, and the bus tests spent most of their time in it
// (measured on its PostgreSQL handler: TestBusOncePerGroup failed its
// deadline after 109 s with FerretDB in the test binary, and passed in 19
// s with it in a process of its own).
// The server ends when stop closes its standard input, or when the test
// binary ends, however it ends.
func startFerretProcess(dir, handler, pgURL string) (uri string, stop func(), err error) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "ferretserver")
	build := exec.Command(goCmd, "build", "-race=false", "-o", bin, "./testdata/ferretserver")
	if out, err := build.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("build testdata/ferretserver: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-handler", handler, "-sqlite-url", "file:"+dir+"/", "-postgresql-url", pgURL)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	// A pipe of our own for its output: Wait would close the one of
	// StdoutPipe while it is still read.
	stdout, w, err := os.Pipe()
	if err != nil {
		return "", nil, err
	}
	cmd.Stdout = w
	err = cmd.Start()
	_ = w.Close()
	if err != nil {
		_ = stdout.Close()
		return "", nil, err
	}
	stop = func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		_, _ = io.Copy(io.Discard, stdout)
		_ = stdout.Close()
	}()
	select {
	case uri, ok := <-line:
		if !ok || !strings.HasPrefix(uri, "mongodb://") {
			stop()
			return "", nil, fmt.Errorf("testdata/ferretserver printed %q, not its URI", uri)
		}
		return uri, stop, nil
	case <-time.After(time.Minute):
		stop()
		return "", nil, errors.New("testdata/ferretserver did not print its URI within a minute")
	}
}

// connect returns a client of the test server, closed at cleanup.
func connect(t testing.TB) *mongo.Client {
	t.Helper()
	c, err := mongo.Connect(options.Client().ApplyURI(serverURI).SetTimeout(30 * time.Second))
	if err != nil {
		t.Fatalf("connect %s: %v", serverURI, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx, nil); err != nil {
		if os.Getenv("CI") == "true" || !strings.Contains(os.Getenv("CAP_TEST_MONGO"), "://") {
			t.Fatalf("ping %s: %v", serverURI, err)
		}
		t.Skipf("MongoDB at %s unreachable: %v", serverURI, err)
	}
	return c
}

// newStore returns a migrated storage on a database of its own, dropped
// at cleanup.
func newStore(t testing.TB, c *mongo.Client) *mongodb.Store {
	t.Helper()
	name := fmt.Sprintf("cap_test_%x", rand.Uint64())
	s, err := mongodb.New(t.Context(), c, mongodb.Options{Database: name})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Database(name).Drop(context.Background()) })
	return s
}

// newStoreOn returns a second storage on the database of another one.
func newStoreOn(t testing.TB, c *mongo.Client, db string) (*mongodb.Store, error) {
	t.Helper()
	return mongodb.New(t.Context(), c, mongodb.Options{Database: db})
}
