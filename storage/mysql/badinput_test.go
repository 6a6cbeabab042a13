package mysql_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	driver "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // a driver of another database
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/mysql"
)

// CheckDSN names every setting the storage cannot work with, at once.
func TestCheckDSN(t *testing.T) {
	t.Parallel()
	require.NoError(t, mysql.CheckDSN("root@tcp(127.0.0.1:3306)/test?parseTime=true"))
	require.NoError(t, mysql.CheckDSN("root@tcp(127.0.0.1:3306)/test?parseTime=true&loc=UTC&charset=utf8mb4&interpolateParams=true"))
	for dsn, want := range map[string][]string{
		"root@tcp(127.0.0.1:3306)/test":                                            {"parseTime=true is missing"},
		"root@tcp(127.0.0.1:3306)/?parseTime=true":                                 {"no database name"},
		"root@tcp(127.0.0.1:3306)/test?parseTime=true&loc=Europe%2FParis":          {"loc=Europe/Paris"},
		"root@tcp(127.0.0.1:3306)/test?parseTime=true&charset=latin1":              {"charset=latin1"},
		"root@tcp(127.0.0.1:3306)/test?parseTime=true&collation=latin1_swedish_ci": {"collation=latin1_swedish_ci"},
		"root@tcp(127.0.0.1:3306)/?charset=utf8":                                   {"parseTime=true is missing", "no database name", "charset=utf8"},
		"not a dsn at all":                                                         {"invalid DSN"},
	} {
		err := mysql.CheckDSN(dsn)
		require.ErrorIs(t, err, mysql.ErrDSN, dsn)
		for _, w := range want {
			require.ErrorContains(t, err, w, dsn)
		}
		_, err = mysql.Open(dsn)
		require.ErrorIs(t, err, mysql.ErrDSN, "Open(%q)", dsn)
	}
}

// A *sql.DB whose connections lack parseTime, or use another character set,
// is refused by Migrate with the same words, before any table is created.
func TestMigrateRefusesConnection(t *testing.T) {
	t.Parallel()
	connect(t)
	for _, c := range []struct{ strip, add, want string }{
		{strip: "parseTime=true", want: "parseTime=true is missing"},
		{add: "charset=latin1", want: "character set is latin1"},
		{add: "loc=Europe%2FParis", want: "location Europe/Paris"},
		{add: "sql_mode=%27NO_ENGINE_SUBSTITUTION%27", want: "is not strict"},
	} {
		d := dsn()
		if c.strip != "" {
			d = strings.NewReplacer("?"+c.strip+"&", "?", "&"+c.strip, "", "?"+c.strip, "").Replace(d)
			require.NotContains(t, d, c.strip)
		}
		if c.add != "" {
			if strings.Contains(d, "?") {
				d += "&" + c.add
			} else {
				d += "?" + c.add
			}
		}
		db, err := sql.Open("mysql", d)
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		prefix := newPrefix(t)
		s, err := mysql.New(db, mysql.Options{TableNamePrefix: prefix})
		require.NoError(t, err)
		err = s.Migrate(context.Background())
		require.ErrorIs(t, err, mysql.ErrDSN, d)
		require.ErrorContains(t, err, c.want, d)
		var n int
		require.NoError(t, connect(t).QueryRow(`SELECT COUNT(*) FROM information_schema.tables
			WHERE table_schema = DATABASE() AND table_name LIKE ?`, prefix+"%").Scan(&n))
		require.Zero(t, n, "no table created")
	}
}

// A *sql.DB of another driver is refused by New; one built from the
// driver's connector is accepted.
func TestNewRefusesOtherDriver(t *testing.T) {
	t.Parallel()
	_, err := mysql.New(nil, mysql.Options{})
	require.Error(t, err)
	other, err := sql.Open("pgx", "postgres://127.0.0.1:1/none")
	require.NoError(t, err)
	t.Cleanup(func() { _ = other.Close() })
	_, err = mysql.New(other, mysql.Options{})
	require.ErrorIs(t, err, mysql.ErrNotMySQL)

	connect(t)
	cfg, err := driver.ParseDSN(dsn())
	require.NoError(t, err)
	conn, err := driver.NewConnector(cfg)
	require.NoError(t, err)
	db := sql.OpenDB(conn)
	t.Cleanup(func() { _ = db.Close() })
	s, err := mysql.New(db, mysql.Options{TableNamePrefix: newPrefix(t)})
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()))
}

// A Received row with a value the database cannot hold fails with
// storage.ErrRefused, one after an outage would not: the bus fails the first
// kind of message for good and returns the second to the broker.
func TestInsertReceivedRefusedValue(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil, mysql.Options{})
	ctx := context.Background()
	rec := &storage.Record{ID: 1, Version: "v1", Name: strings.Repeat("n", 401), Group: "g", MessageID: "m1",
		Content: []byte(`{"Headers":{},"Value":null}`)}
	_, err := s.InsertReceived(ctx, rec)
	require.ErrorIs(t, err, storage.ErrRefused, "a Name longer than its column")
	_, err = s.InsertReceivedBatch(ctx, []*storage.Record{rec})
	require.ErrorIs(t, err, storage.ErrRefused, "the same in a batch")
	bad := &storage.Record{ID: 2, Version: "v1", Name: "ok", Group: "g", MessageID: "m2",
		Content: []byte("{\"Value\":\"\xff\xfe\"}")}
	_, err = s.InsertReceived(ctx, bad)
	require.ErrorIs(t, err, storage.ErrRefused, "bytes that are not UTF-8")

	rec.Name = "ok"
	ok, err := s.InsertReceived(ctx, rec)
	require.NoError(t, err)
	require.True(t, ok)
	got, err := s.Get(ctx, storage.Received, 1)
	require.NoError(t, err)
	require.Equal(t, "ok", got.Name, "nothing was cut")
}
