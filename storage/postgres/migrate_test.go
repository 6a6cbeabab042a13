package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
)

// capDDL is what DotNetCore.CAP's PostgreSqlStorageInitializer creates
// (with UseStorageLock). CAP 8.3.1 and 8.3.2 gave the Version indexes an
// INCLUDE clause, which include selects.
func capDDL(schema string, include bool) []string {
	s := `"` + schema + `"`
	inc := ""
	if include {
		inc = ` INCLUDE ("Id","Content","Retries","Added")`
	}
	return []string{
		`CREATE SCHEMA IF NOT EXISTS ` + s,
		`CREATE TABLE IF NOT EXISTS ` + s + `."received"(
			"Id" BIGINT PRIMARY KEY NOT NULL,
			"Version" VARCHAR(20) NOT NULL,
			"Name" VARCHAR(200) NOT NULL,
			"Group" VARCHAR(200) NULL,
			"Content" TEXT NULL,
			"Retries" INT NOT NULL,
			"Added" TIMESTAMP NOT NULL,
			"ExpiresAt" TIMESTAMP NULL,
			"StatusName" VARCHAR(50) NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS ` + s + `."published"(
			"Id" BIGINT PRIMARY KEY NOT NULL,
			"Version" VARCHAR(20) NOT NULL,
			"Name" VARCHAR(200) NOT NULL,
			"Content" TEXT NULL,
			"Retries" INT NOT NULL,
			"Added" TIMESTAMP NOT NULL,
			"ExpiresAt" TIMESTAMP NULL,
			"StatusName" VARCHAR(50) NOT NULL)`,
		`CREATE INDEX IF NOT EXISTS "idx_received_ExpiresAt_StatusName" ON ` + s + `."received" ("ExpiresAt","StatusName")`,
		`CREATE INDEX IF NOT EXISTS "idx_received_Version_ExpiresAt_StatusName" ON ` + s + `."received" ("Version","ExpiresAt","StatusName")` + inc,
		`CREATE INDEX IF NOT EXISTS "idx_published_ExpiresAt_StatusName" ON ` + s + `."published" ("ExpiresAt","StatusName")`,
		`CREATE INDEX IF NOT EXISTS "idx_published_Version_ExpiresAt_StatusName" ON ` + s + `."published" ("Version","ExpiresAt","StatusName")` + inc,
		`CREATE TABLE IF NOT EXISTS ` + s + `."lock"(
			"Key" VARCHAR(128) PRIMARY KEY NOT NULL,
			"Instance" VARCHAR(256) NULL,
			"LastLockTime" TIMESTAMP NOT NULL)`,
		`INSERT INTO ` + s + `."lock" ("Key","Instance","LastLockTime") VALUES ('publish_retry_v1','','0001-01-01 00:00:00') ON CONFLICT DO NOTHING`,
		`INSERT INTO ` + s + `."lock" ("Key","Instance","LastLockTime") VALUES ('received_retry_v1','','0001-01-01 00:00:00') ON CONFLICT DO NOTHING`,
	}
}

// bigContent is Content too large for a btree entry, even compressed.
func bigContent(t *testing.T) []byte {
	b := make([]byte, 32<<10)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return []byte(`{"Headers":{},"Value":"` + hex.EncodeToString(b) + `"}`)
}

// TestMigrateCAPDatabase creates CAP's exact tables, fills them as CAP
// would, migrates, and checks that CAP's pending rows become due and the
// storage works on the upgraded tables.
func TestMigrateCAPDatabase(t *testing.T) {
	t.Parallel()
	for _, include := range []bool{false, true} {
		name := "cap"
		if include {
			name = "cap-8.3.1-include"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool, _ := connect(t)
			schema := newSchema(t)
			for _, stmt := range capDDL(schema, include) {
				psql(t, stmt)
			}
			// CAP's rows: local times, no NextAttemptAt.
			insert := `INSERT INTO "` + schema + `"."published" ("Id","Version","Name","Content","Retries","Added","ExpiresAt","StatusName")
				VALUES ($1, 'v1', $2, '{}', $3, localtimestamp - interval '1 hour', $4, $5)`
			hourAgo, inHour := time.Now().Add(-time.Hour).UTC(), time.Now().Add(time.Hour).UTC()
			psql(t, insert, 1, "scheduled", 0, nil, "Scheduled")
			psql(t, insert, 2, "failed.retrying", 3, hourAgo.Add(15*24*time.Hour), "Failed")
			psql(t, insert, 3, "failed.for.good", 50, hourAgo.Add(15*24*time.Hour), "Failed")
			psql(t, insert, 4, "succeeded", 0, inHour, "Succeeded")
			psql(t, insert, 5, "delayed", 0, inHour, "Delayed")
			psql(t, insert, 6, "queued", 0, hourAgo, "Queued")
			psql(t, `INSERT INTO "`+schema+`"."received" ("Id","Version","Name","Group","Content","Retries","Added","ExpiresAt","StatusName")
				VALUES (11, 'v1', 'r', 'g', '{}', 0, localtimestamp, NULL, 'Scheduled'),
				       (12, 'v1', 'r', 'g', '{}', 0, localtimestamp, localtimestamp + interval '1 day', 'Succeeded')`)
			if include {
				_, err := pool.Exec(ctx, insert, 7, "big", 0, nil, "Scheduled")
				require.NoError(t, err)
				_, err = pool.Exec(ctx, `UPDATE "`+schema+`"."published" SET "Content" = $1 WHERE "Id" = 7`, string(bigContent(t)))
				require.ErrorContains(t, err, "index row", "CAP's INCLUDE index rejects large contents")
				psql(t, `DELETE FROM "`+schema+`"."published" WHERE "Id" = 7`)
			}

			s, err := postgres.New(pool, postgres.Options{Schema: schema})
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

			// The upgraded tables take large contents and de-duplicate deliveries.
			big := rec("big")
			big.Content = bigContent(t)
			require.NoError(t, s.InsertPublished(ctx, []*storage.Record{big}))
			r1, r2 := rec("r"), rec("r")
			r1.Group, r1.MessageID, r2.Group, r2.MessageID = "g", "m", "g", "m"
			ok, err := s.InsertReceived(ctx, r1)
			require.NoError(t, err)
			require.True(t, ok)
			ok, err = s.InsertReceived(ctx, r2)
			require.NoError(t, err)
			require.False(t, ok)

			// CAP's INCLUDE variant of the Version index is gone; the plain
			// one stays.
			rs, err := pool.Query(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = $2`,
				schema, "idx_published_Version_ExpiresAt_StatusName")
			require.NoError(t, err)
			defs, err := pgx.CollectRows(rs, pgx.RowTo[string])
			require.NoError(t, err)
			if include {
				require.Empty(t, defs, "the INCLUDE variant is dropped")
			} else {
				require.Len(t, defs, 1, "CAP's plain Version index is kept")
			}
			var lockRows int
			require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM "`+schema+`"."lock"`).Scan(&lockRows))
			require.Equal(t, 2, lockRows, "CAP's lock table is left alone")
		})
	}
}

// TestMigrateConcurrently starts several instances on a fresh schema at once.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	pool, db := connect(t)
	schema := newSchema(t)
	var migrators []func(context.Context) error
	for range 4 {
		ps, err := postgres.New(pool, postgres.Options{Schema: schema})
		require.NoError(t, err)
		ss, err := postgres.NewSQL(db, postgres.Options{Schema: schema})
		require.NoError(t, err)
		migrators = append(migrators, ps.Migrate, ss.Migrate)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(migrators))
	start := make(chan struct{})
	for _, migrate := range migrators {
		wg.Go(func() {
			<-start
			errs <- migrate(context.Background())
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	var indexes int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_indexes WHERE schemaname = $1`, schema).Scan(&indexes))
	// Per table: primary key, CAP's expiry index, claim, dashboard; received
	// adds the unique one; the lock table has its primary key.
	require.Equal(t, 10, indexes)
}

// TestMigrateWholeStatusIndex: a table whose dashboard index holds every row
// (as this storage made it before pending rows were left out) gets the
// partial one, and its dashboard queries still see every row.
func TestMigrateWholeStatusIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := connect(t)
	s := newPgx(t, postgres.Options{})
	schema := s.Schema()
	for _, tbl := range []string{"published", "received"} {
		idx := `"` + schema + `"."idx_` + tbl + `_StatusName_Added"`
		psql(t, `DROP INDEX `+idx)
		psql(t, `CREATE INDEX "idx_`+tbl+`_StatusName_Added" ON "`+schema+`"."`+tbl+`" ("StatusName", "Added")`)
	}
	pending, idle, done := rec("pending"), rec("idle"), rec("done")
	idle.Terminal = true
	require.NoError(t, s.InsertPublished(ctx, []*storage.Record{pending, idle, done}))
	require.NoError(t, s.SetOutcomes(ctx, storage.Published, []storage.Outcome{{ID: done.ID, Status: storage.StatusSucceeded}}))
	require.NoError(t, s.Migrate(ctx))

	for _, tbl := range []string{"published", "received"} {
		var def string
		require.NoError(t, pool.QueryRow(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = $2`,
			schema, "idx_"+tbl+"_StatusName_Added").Scan(&def))
		require.Contains(t, def, "WHERE", "%s: the partial index replaces the whole one", tbl)
	}
	got, total, err := s.List(ctx, storage.Published, storage.ListQuery{Status: storage.StatusScheduled})
	require.NoError(t, err)
	require.EqualValues(t, 2, total)
	require.ElementsMatch(t, []int64{pending.ID, idle.ID}, ids(got), "Scheduled rows, pending or not")
	got, total, err = s.List(ctx, storage.Published, storage.ListQuery{Status: storage.StatusSucceeded})
	require.NoError(t, err)
	require.EqualValues(t, 1, total)
	require.Equal(t, []int64{done.ID}, ids(got))
}
