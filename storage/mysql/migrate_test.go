package mysql_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/mysql"
)

// capDDL is what DotNetCore.CAP's MySqlStorageInitializer creates (with
// UseStorageLock), reference section 3.2.
func capDDL(prefix string) []string {
	return []string{
		"CREATE TABLE IF NOT EXISTS `" + prefix + ".received` (\n" +
			"  `Id` bigint NOT NULL,\n" +
			"  `Version` varchar(20) DEFAULT NULL,\n" +
			"  `Name` varchar(400) NOT NULL,\n" +
			"  `Group` varchar(200) DEFAULT NULL,\n" +
			"  `Content` longtext,\n" +
			"  `Retries` int(11) DEFAULT NULL,\n" +
			"  `Added` datetime NOT NULL,\n" +
			"  `ExpiresAt` datetime DEFAULT NULL,\n" +
			"  `StatusName` varchar(50) NOT NULL,\n" +
			"  PRIMARY KEY (`Id`),\n" +
			"  INDEX `IX_Version_ExpiresAt_StatusName` (`Version`, `ExpiresAt`, `StatusName`),\n" +
			"  INDEX `IX_ExpiresAt_StatusName` (`ExpiresAt`, `StatusName`)\n" +
			") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
		"CREATE TABLE IF NOT EXISTS `" + prefix + ".published` (\n" +
			"  `Id` bigint NOT NULL,\n" +
			"  `Version` varchar(20) DEFAULT NULL,\n" +
			"  `Name` varchar(200) NOT NULL,\n" +
			"  `Content` longtext,\n" +
			"  `Retries` int(11) DEFAULT NULL,\n" +
			"  `Added` datetime NOT NULL,\n" +
			"  `ExpiresAt` datetime DEFAULT NULL,\n" +
			"  `StatusName` varchar(40) NOT NULL,\n" +
			"  PRIMARY KEY (`Id`),\n" +
			"  INDEX `IX_Version_ExpiresAt_StatusName` (`Version`, `ExpiresAt`, `StatusName`),\n" +
			"  INDEX `IX_ExpiresAt_StatusName` (`ExpiresAt`, `StatusName`)\n" +
			") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
		"CREATE TABLE IF NOT EXISTS `" + prefix + ".lock` (\n" +
			"  `Key` varchar(128) NOT NULL,\n" +
			"  `Instance` varchar(256) DEFAULT NULL,\n" +
			"  `LastLockTime` datetime DEFAULT NULL,\n" +
			"  PRIMARY KEY (`Key`)\n" +
			") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
		"INSERT IGNORE INTO `" + prefix + ".lock` (`Key`,`Instance`,`LastLockTime`) VALUES ('publish_retry_v1', '', '0001-01-01 00:00:00')",
		"INSERT IGNORE INTO `" + prefix + ".lock` (`Key`,`Instance`,`LastLockTime`) VALUES ('received_retry_v1', '', '0001-01-01 00:00:00')",
	}
}

func ids(recs []*storage.Record) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// TestMigrateCAPDatabase creates CAP's exact tables, fills them as CAP
// would, migrates, and checks that CAP's pending rows become due, CAP's
// columns are widened and the storage works on the upgraded tables.
func TestMigrateCAPDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := connect(t)
	prefix := newPrefix(t)
	for _, stmt := range capDDL(prefix) {
		exec(t, stmt)
	}
	// CAP's rows: local times (the server's are UTC here), no NextAttemptAt.
	insert := "INSERT INTO `" + prefix + ".published` (`Id`,`Version`,`Name`,`Content`,`Retries`,`Added`,`ExpiresAt`,`StatusName`) " +
		"VALUES (?, 'v1', ?, '{}', ?, NOW() - INTERVAL 1 HOUR, ?, ?)"
	hourAgo, inHour := time.Now().Add(-time.Hour).UTC().Truncate(time.Second), time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	exec(t, insert, 1, "scheduled", 0, nil, "Scheduled")
	exec(t, insert, 2, "failed.retrying", 3, hourAgo.Add(15*24*time.Hour), "Failed")
	exec(t, insert, 3, "failed.for.good", 50, hourAgo.Add(15*24*time.Hour), "Failed")
	exec(t, insert, 4, "succeeded", 0, inHour, "Succeeded")
	exec(t, insert, 5, "delayed", 0, inHour, "Delayed")
	exec(t, insert, 6, "queued", 0, hourAgo, "Queued")
	exec(t, "INSERT INTO `"+prefix+".received` (`Id`,`Version`,`Name`,`Group`,`Content`,`Retries`,`Added`,`ExpiresAt`,`StatusName`) "+
		"VALUES (11, 'v1', 'r', 'g', '{}', 0, NOW(), NULL, 'Scheduled'), (12, 'v1', 'r', 'g', '{}', 0, NOW(), NOW() + INTERVAL 1 DAY, 'Succeeded')")

	s, err := mysql.New(db, mysql.Options{TableNamePrefix: prefix})
	require.NoError(t, err)
	require.NoError(t, s.Migrate(ctx))

	claimed, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 100, Lease: time.Hour})
	require.NoError(t, err)
	require.ElementsMatch(t, []int64{1, 2, 6}, ids(claimed), "CAP's pending rows are due")
	delayed, err := s.Get(ctx, storage.Published, 5)
	require.NoError(t, err)
	require.Equal(t, delayed.ExpiresAt, delayed.NextAttemptAt, "a Delayed row is due at its ExpiresAt")
	done, err := s.Get(ctx, storage.Published, 3)
	require.NoError(t, err)
	require.Nil(t, done.NextAttemptAt)
	claimed, err = s.Claim(ctx, storage.Received, storage.ClaimRequest{Version: "v1", Limit: 100, Lease: time.Hour})
	require.NoError(t, err)
	require.Equal(t, []int64{11}, ids(claimed))

	// Migrating again changes nothing: the claimed rows keep their lease.
	require.NoError(t, s.Migrate(ctx))
	claimed, err = s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 100, Lease: time.Hour})
	require.NoError(t, err)
	require.Empty(t, claimed)

	// The upgraded tables keep microseconds, take 4-byte UTF-8 and
	// de-duplicate deliveries.
	r := &storage.Record{ID: 100, Version: "v1", Name: "new", Content: []byte(`{"Headers":{},"Value":"😀"}`)}
	require.NoError(t, s.InsertPublished(ctx, []*storage.Record{r}))
	got, err := s.Get(ctx, storage.Published, 100)
	require.NoError(t, err)
	require.Equal(t, r.Content, got.Content)
	require.Equal(t, r.Added, got.Added)
	var precision int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT datetime_precision FROM information_schema.columns
		WHERE table_schema = DATABASE() AND table_name = ? AND column_name = 'Added'`, prefix+".published").Scan(&precision))
	require.Equal(t, 6, precision)
	r1 := &storage.Record{ID: 101, Version: "v1", Name: "r", Group: "g", MessageID: "m", Content: []byte(`{}`)}
	r2 := &storage.Record{ID: 102, Version: "v1", Name: "r", Group: "g", MessageID: "m", Content: []byte(`{}`)}
	ok, err := s.InsertReceived(ctx, r1)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = s.InsertReceived(ctx, r2)
	require.NoError(t, err)
	require.False(t, ok)

	// CAP's Version index is kept; CAP's lock table is left alone.
	var n int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.statistics
		WHERE table_schema = DATABASE() AND table_name = ? AND index_name = 'IX_Version_ExpiresAt_StatusName'`,
		prefix+".published").Scan(&n))
	require.Positive(t, n, "CAP's Version index is kept")
	require.NoError(t, db.QueryRowContext(ctx, "SELECT COUNT(*) FROM `"+prefix+".lock`").Scan(&n))
	require.Equal(t, 2, n, "CAP's lock table is left alone")
}

// TestMigrateConcurrently starts eight instances on fresh tables at once,
// and then eight on CAP's tables to upgrade.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	db := connect(t)
	for _, fromCAP := range []bool{false, true} {
		prefix := newPrefix(t)
		if fromCAP {
			for _, stmt := range capDDL(prefix) {
				exec(t, stmt)
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		start := make(chan struct{})
		for range 8 {
			s, err := mysql.New(db, mysql.Options{TableNamePrefix: prefix})
			require.NoError(t, err)
			wg.Go(func() {
				<-start
				errs <- s.Migrate(context.Background())
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		var indexes int
		require.NoError(t, db.QueryRowContext(context.Background(), `SELECT COUNT(DISTINCT table_name, index_name)
			FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name IN (?, ?)`,
			prefix+".published", prefix+".received").Scan(&indexes))
		// Per table: primary key, CAP's expiry index, claim, dashboard;
		// received adds the unique one; CAP's tables keep their Version
		// index.
		want := 9
		if fromCAP {
			want = 11
		}
		require.Equal(t, want, indexes, "from CAP: %v", fromCAP)
	}
}

// TestPrefixRefused: a prefix that is not a plain identifier, or too long
// for MySQL's 64-character table names, is refused by New before any SQL
// runs, with an error that names the option and the value.
func TestPrefixRefused(t *testing.T) {
	t.Parallel()
	db := connect(t)
	for _, prefix := range []string{
		"cap`; DROP TABLE `cap.published`; --",
		`cap; DROP TABLE x`,
		`cap'--`,
		`cap.published`,
		"`cap`",
		`ca p`,
		"cap\x00",
		`1cap`,
		`càp`,
		strings.Repeat("c", 55),
	} {
		_, err := mysql.New(db, mysql.Options{TableNamePrefix: prefix})
		require.ErrorIs(t, err, storage.ErrInvalidIdentifier, "prefix %q", prefix)
		require.ErrorContains(t, err, "prefix")
	}
	// The longest prefix that fits is used as it is.
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	prefix := "cap_" + strings.Repeat("x", 42) + hex.EncodeToString(b)
	require.Len(t, prefix, 54)
	t.Cleanup(func() { dropTables(t, db, prefix) })
	s, err := mysql.New(db, mysql.Options{TableNamePrefix: prefix})
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()))
	var n int
	require.NoError(t, db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM information_schema.tables
		WHERE table_schema = DATABASE() AND table_name IN (?, ?)`, prefix+".published", prefix+".received").Scan(&n))
	require.Equal(t, 2, n)
}
