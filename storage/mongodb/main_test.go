package mongodb_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/go-cap/cap/storage/mongodb"
)

// The server the tests run on: CAP_TEST_MONGO when set (a replica set runs
// the transactional subtests too), else an embedded FerretDB on SQLite in
// a temporary directory, started once for the package.
var (
	serverURI string
	ferret    bool // the server is the embedded FerretDB
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
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:      ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Handler:       handler,
		SQLiteURL:     "file:" + dir + "/",
		PostgreSQLURL: pgURL,
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
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
