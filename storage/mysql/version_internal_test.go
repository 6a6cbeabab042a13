package mysql

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// checkVersion accepts MySQL 8.0+ and MariaDB 10.6+ (FOR UPDATE SKIP
// LOCKED) and refuses older servers with an error naming the version.
func TestCheckVersion(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"8.0.36", "8.4.0", "9.1.0-commercial", "10.6.0-MariaDB", "10.11.19-MariaDB-0+deb12u1",
		"11.4.2-MariaDB-ubu2404", "5.5.5-10.11.6-MariaDB-log"} {
		require.NoError(t, checkVersion(v), v)
	}
	for v, want := range map[string]string{
		"5.7.44-log":                "MySQL 5.7",
		"5.7.44":                    "MySQL 5.7",
		"10.5.23-MariaDB":           "MariaDB 10.5",
		"10.3.39-MariaDB-0+deb10u1": "MariaDB 10.3",
		"5.5.5-10.4.32-MariaDB":     "MariaDB 10.4",
		"garbage":                   "cannot read the server version",
	} {
		err := checkVersion(v)
		require.ErrorIs(t, err, ErrServerVersion, v)
		require.ErrorContains(t, err, want, v)
		require.ErrorContains(t, err, v, "the error shows the version reported")
	}
}
