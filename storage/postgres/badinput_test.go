package postgres_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/postgres"
)

// A schema option that is not a plain identifier is refused by New and
// NewSQL, before any SQL runs, with an error that names the option and the
// value: nothing from the options is ever spliced into a statement.
func TestSchemaWithSQLRefused(t *testing.T) {
	t.Parallel()
	pool, db := connect(t)
	for _, schema := range []string{
		`cap"; DROP SCHEMA public CASCADE; --`,
		`cap; DROP TABLE cap.published`,
		`cap'--`,
		`cap.published`,
		`"cap"`,
		`cap/**/`,
		`ca p`,
		"cap\x00",
		"cap\n",
		`1cap`,
		`càp`,
		`-cap`,
		strings.Repeat("c", 64),
	} {
		_, err := postgres.New(pool, postgres.Options{Schema: schema})
		require.ErrorIs(t, err, storage.ErrInvalidIdentifier, "New with schema %q", schema)
		require.ErrorContains(t, err, "schema")
		require.Contains(t, err.Error(), strconv.Quote(schema), "the error shows the value refused")
		_, err = postgres.NewSQL(db, postgres.Options{Schema: schema})
		require.ErrorIs(t, err, storage.ErrInvalidIdentifier, "NewSQL with schema %q", schema)
	}
}

// The longest identifier PostgreSQL keeps whole (63 bytes) is accepted and
// used as it is.
func TestSchemaOfSixtyThreeBytes(t *testing.T) {
	t.Parallel()
	pool, _ := connect(t)
	schema := "cap_" + strings.Repeat("x", 47) + newSchema(t)[len("cap_test_"):]
	require.Len(t, schema, 63)
	t.Cleanup(func() { psql(t, `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`) })
	s, err := postgres.New(pool, postgres.Options{Schema: schema})
	require.NoError(t, err)
	require.NoError(t, s.Migrate(context.Background()))
	var n int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT count(*) FROM information_schema.tables WHERE table_schema = $1`, schema).Scan(&n))
	require.Equal(t, 3, n, "published, received and lock in the schema named")
}
