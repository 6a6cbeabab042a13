package sqlserver_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/sqlserver"
)

// capDDL is what DotNetCore.CAP's SqlServerStorageInitializer creates
// (with UseStorageLock).
func capDDL(schema string) []string {
	s := `[` + schema + `]`
	table := func(name, group string) string {
		return `IF OBJECT_ID(N'` + s + `.[` + name + `]', N'U') IS NULL
BEGIN
CREATE TABLE ` + s + `.[` + name + `](
	[Id] [bigint] NOT NULL,
	[Version] [nvarchar](20) NOT NULL,
	[Name] [nvarchar](200) NOT NULL,` + group + `
	[Content] [nvarchar](max) NULL,
	[Retries] [int] NOT NULL,
	[Added] [datetime2](7) NOT NULL,
	[ExpiresAt] [datetime2](7) NULL,
	[StatusName] [nvarchar](50) NOT NULL,
 CONSTRAINT [PK_` + schema + `.` + name + `] PRIMARY KEY CLUSTERED ([Id] ASC)
 WITH (PAD_INDEX = OFF, STATISTICS_NORECOMPUTE = OFF, IGNORE_DUP_KEY = OFF, ALLOW_ROW_LOCKS = ON, ALLOW_PAGE_LOCKS = ON)
)
CREATE NONCLUSTERED INDEX [IX_` + schema + `.` + name + `_Version_ExpiresAt_StatusName] ON ` + s + `.[` + name + `]
	([Version] ASC, [ExpiresAt] ASC, [StatusName] ASC) INCLUDE ([Id], [Content], [Retries], [Added])
CREATE NONCLUSTERED INDEX [IX_` + schema + `.` + name + `_ExpiresAt_StatusName] ON ` + s + `.[` + name + `]
	([ExpiresAt] ASC, [StatusName] ASC)
END`
	}
	return []string{
		`IF NOT EXISTS (SELECT * FROM sys.schemas WHERE name = N'` + schema + `') EXEC(N'CREATE SCHEMA ` + s + `')`,
		table("Received", "\n\t[Group] [nvarchar](200) NULL,"),
		table("Published", ""),
		`IF OBJECT_ID(N'` + s + `.[Lock]', N'U') IS NULL
CREATE TABLE ` + s + `.[Lock](
	[Key] [nvarchar](128) NOT NULL,
	[Instance] [nvarchar](256) NOT NULL,
	[LastLockTime] [datetime2](7) NOT NULL,
 CONSTRAINT [PK_` + schema + `.Lock] PRIMARY KEY CLUSTERED ([Key] ASC) WITH (IGNORE_DUP_KEY = ON)
)`,
		`INSERT INTO ` + s + `.[Lock] ([Key], [Instance], [LastLockTime]) VALUES
	(N'publish_retry_v1', N'', '0001-01-01T00:00:00'), (N'received_retry_v1', N'', '0001-01-01T00:00:00')`,
	}
}

// TestMigrateCAPDatabase creates CAP's exact tables, fills them as CAP
// would, migrates, and checks that CAP's pending rows become due and the
// storage works on the upgraded tables. Needs CAP_TEST_SQLSERVER.
func TestMigrateCAPDatabase(t *testing.T) {
	ctx := context.Background()
	schema := newSchema(t)
	for _, stmt := range capDDL(schema) {
		execSQL(t, stmt)
	}
	pub := `INSERT INTO [` + schema + `].[Published] ([Id], [Version], [Name], [Content], [Retries], [Added], [ExpiresAt], [StatusName])
		VALUES (@p1, N'v1', N'order', N'{}', @p2, SYSDATETIME(), @p3, @p4)`
	later := time.Now().UTC().Add(time.Hour).Truncate(time.Second)
	execSQL(t, pub, int64(1), 0, nil, "Scheduled")   // never sent: due
	execSQL(t, pub, int64(2), 3, nil, "Failed")      // below 50 retries: due
	execSQL(t, pub, int64(3), 50, nil, "Failed")     // given up
	execSQL(t, pub, int64(4), 0, later, "Succeeded") // done
	execSQL(t, pub, int64(5), 0, later, "Delayed")   // due at ExpiresAt
	rec := `INSERT INTO [` + schema + `].[Received] ([Id], [Version], [Name], [Group], [Content], [Retries], [Added], [ExpiresAt], [StatusName])
		VALUES (@p1, N'v1', N'order', N'g.v1', N'{}', 0, SYSDATETIME(), NULL, N'Scheduled')`
	// CAP has no MessageId: two rows of one group with none.
	execSQL(t, rec, int64(11))
	execSQL(t, rec, int64(12))

	s, err := sqlserver.New(connect(t), sqlserver.Options{Schema: schema})
	require.NoError(t, err)
	require.NoError(t, s.Migrate(ctx))
	require.NoError(t, s.Migrate(ctx), "idempotent")

	due := map[int64]bool{1: true, 2: true, 3: false, 4: false, 5: true}
	for id, want := range due {
		r, err := s.Get(ctx, storage.Published, id)
		require.NoError(t, err)
		require.Equal(t, want, r.NextAttemptAt != nil, "row %d", id)
	}
	r5, err := s.Get(ctx, storage.Published, 5)
	require.NoError(t, err)
	require.WithinDuration(t, later, *r5.NextAttemptAt, time.Millisecond, "a delayed row is due at its ExpiresAt")

	claimed, err := s.Claim(ctx, storage.Published, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Minute})
	require.NoError(t, err)
	var ids []int64
	for _, r := range claimed {
		ids = append(ids, r.ID)
	}
	require.ElementsMatch(t, []int64{1, 2}, ids)
	got, err := s.Claim(ctx, storage.Received, storage.ClaimRequest{Version: "v1", Limit: 10, Lease: time.Minute})
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "", got[0].MessageID)

	// New deliveries are de-duplicated beside CAP's rows.
	for i, want := range []bool{true, false} {
		ok, err := s.InsertReceived(ctx, &storage.Record{ID: int64(20 + i), Version: "v1", Name: "order", Group: "g.v1", MessageID: "m1"})
		require.NoError(t, err)
		require.Equal(t, want, ok)
	}
	var lockRows int
	require.NoError(t, connect(t).QueryRowContext(ctx, `SELECT COUNT(*) FROM [`+schema+`].[Lock]`).Scan(&lockRows))
	require.Equal(t, 2, lockRows, "CAP's lock table is left alone")

	// Leases and nodes work in CAP's Lock table (whose key ignores
	// duplicates), beside CAP's rows.
	ok, err := s.AcquireLease(ctx, "cap.collector", "a", time.Hour)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = s.AcquireLease(ctx, "cap.collector", "b", time.Hour)
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, s.ReleaseLease(ctx, "cap.collector", "a"))
	node := storage.Node{ID: "n1", Name: "orders", Host: "h", Version: "v1", Started: time.Now().UTC()}
	require.NoError(t, s.Heartbeat(ctx, node))
	nodes, err := s.Nodes(ctx, time.Hour)
	require.NoError(t, err)
	require.Len(t, nodes, 1)
	require.Equal(t, "n1", nodes[0].ID)
	var capRows int
	require.NoError(t, connect(t).QueryRowContext(ctx, `SELECT COUNT(*) FROM [`+schema+`].[Lock]
		WHERE [Key] IN (N'publish_retry_v1', N'received_retry_v1') AND [Instance] = N''`).Scan(&capRows))
	require.Equal(t, 2, capRows, "CAP's rows are untouched")
}

// TestLeaseOwnersCompareExactly: owners differing only in case are two
// owners, whatever the database's collation. Needs CAP_TEST_SQLSERVER.
func TestLeaseOwnersCompareExactly(t *testing.T) {
	s := newStore(t, sqlserver.Options{})
	ctx := context.Background()
	ok, err := s.AcquireLease(ctx, "cap.collector", "node-a", time.Hour)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = s.AcquireLease(ctx, "cap.collector", "NODE-A", time.Hour)
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, s.ReleaseLease(ctx, "cap.collector", "NODE-A"))
	ok, err = s.AcquireLease(ctx, "cap.collector", "NODE-A", time.Hour)
	require.NoError(t, err)
	require.False(t, ok, "a release by another owner leaves the lease alone")
}

// TestLeaseConcurrentFirstAcquire: instances asking at once for a lease
// not yet in the table: exactly one gets it, none fails. Needs
// CAP_TEST_SQLSERVER.
func TestLeaseConcurrentFirstAcquire(t *testing.T) {
	s := newStore(t, sqlserver.Options{})
	ctx := context.Background()
	for round := range 20 {
		name := "race-" + strconv.Itoa(round)
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			held []string
			errs []error
		)
		start := make(chan struct{})
		for i := range 8 {
			owner := "owner-" + strconv.Itoa(i)
			wg.Go(func() {
				<-start
				ok, err := s.AcquireLease(ctx, name, owner, time.Hour)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				}
				if ok {
					held = append(held, owner)
				}
			})
		}
		close(start)
		wg.Wait()
		require.Empty(t, errs, "round %d", round)
		require.Len(t, held, 1, "round %d: %v", round, held)
	}
}

// TestMigrateConcurrently starts several instances on a fresh schema at
// once. Needs CAP_TEST_SQLSERVER.
func TestMigrateConcurrently(t *testing.T) {
	db := connect(t)
	schema := newSchema(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	start := make(chan struct{})
	for range 6 {
		s, err := sqlserver.New(db, sqlserver.Options{Schema: schema})
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
	require.NoError(t, db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM sys.indexes AS i
		INNER JOIN sys.tables AS t ON t.object_id = i.object_id
		INNER JOIN sys.schemas AS s ON s.schema_id = t.schema_id
		WHERE s.name = @p1 AND i.type > 0`, schema).Scan(&indexes))
	// Per table: primary key, CAP's expiry index, claims, dashboard;
	// Received adds the unique one; the Lock table has its primary key.
	require.Equal(t, 10, indexes)
}
