package mysql

import (
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	driver "github.com/go-sql-driver/mysql"
)

// ErrDSN: the connection is not set up as the storage needs. The error
// says what is missing (parseTime=true, a database name, ...).
var ErrDSN = errors.New("mysql: the connection settings do not suit the storage")

// ErrServerVersion: the server is older than MySQL 8.0 or MariaDB 10.6,
// which lack the FOR UPDATE SKIP LOCKED the claims need.
var ErrServerVersion = errors.New("mysql: server too old: need MySQL 8.0+ or MariaDB 10.6+ (FOR UPDATE SKIP LOCKED)")

// CheckDSN reports, in one error wrapping ErrDSN, every setting of a
// go-sql-driver/mysql DSN that the storage cannot work with:
//
//   - parseTime=true: the storage reads DATETIME columns as time.Time;
//   - loc absent or UTC: the columns hold UTC times;
//   - a database name: the tables live in the connection's database;
//   - charset and collation, when set, of utf8mb4: Content takes any text.
//
// interpolateParams=true is not required but recommended: without it the
// driver prepares, runs and closes every statement, three round trips
// instead of one.
func CheckDSN(dsn string) error {
	cfg, err := driver.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDSN, err)
	}
	var missing []string
	if !cfg.ParseTime {
		missing = append(missing, "parseTime=true is missing (the storage reads DATETIME columns as time.Time)")
	}
	if cfg.Loc != nil && cfg.Loc != time.UTC && cfg.Loc.String() != "UTC" {
		missing = append(missing, fmt.Sprintf("loc=%s: the storage keeps UTC times; leave loc out or set loc=UTC", cfg.Loc))
	}
	if cfg.DBName == "" {
		missing = append(missing, "no database name (user@tcp(host:3306)/dbname): the tables live in the connection's database")
	}
	if i := strings.IndexByte(dsn, '?'); i >= 0 {
		params, err := url.ParseQuery(dsn[i+1:])
		if err == nil {
			for _, cs := range strings.Split(params.Get("charset"), ",") {
				if cs != "" && cs != "utf8mb4" {
					missing = append(missing, fmt.Sprintf("charset=%s: Content needs utf8mb4 (leave charset out or set charset=utf8mb4)", cs))
				}
			}
			if c := params.Get("collation"); c != "" && !strings.HasPrefix(c, "utf8mb4_") {
				missing = append(missing, fmt.Sprintf("collation=%s: Content needs a utf8mb4 collation", c))
			}
		}
	}
	if cfg.Collation != "" && !strings.HasPrefix(cfg.Collation, "utf8mb4_") {
		missing = append(missing, fmt.Sprintf("collation=%s: Content needs a utf8mb4 collation", cfg.Collation))
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrDSN, strings.Join(slicesCompact(missing), "; "))
	}
	return nil
}

func slicesCompact(s []string) []string {
	var out []string
	for _, v := range s {
		if len(out) == 0 || out[len(out)-1] != v {
			out = append(out, v)
		}
	}
	return out
}

// Open checks dsn with CheckDSN and opens a *sql.DB with go-sql-driver/mysql.
func Open(dsn string) (*sql.DB, error) {
	if err := CheckDSN(dsn); err != nil {
		return nil, err
	}
	return sql.Open("mysql", dsn)
}

// session is what Migrate learns of a connection.
type session struct {
	version  string
	database string
	charset  string // character_set_connection
	results  string // character_set_results
	sqlMode  string
	probe    any // a DATETIME(6) literal as the driver returns it
}

var probeTime = time.Date(2000, 1, 2, 3, 4, 5, 123456000, time.UTC)

// problems lists what is wrong with a connection's settings, the same
// things CheckDSN looks for in a DSN, seen from the server: for a *sql.DB
// built from a driver Config or a connector.
func (s session) problems() []string {
	var out []string
	switch v := s.probe.(type) {
	case time.Time:
		if !v.Equal(probeTime) {
			out = append(out, fmt.Sprintf("the driver reads DATETIME values in location %s: set loc=UTC (the default)", v.Location()))
		}
	default:
		out = append(out, fmt.Sprintf("parseTime=true is missing (the driver returned a DATETIME as %T, not time.Time)", s.probe))
	}
	if s.database == "" {
		out = append(out, "no database selected: name one in the DSN (user@tcp(host:3306)/dbname)")
	}
	if s.charset != "utf8mb4" {
		out = append(out, fmt.Sprintf("the connection's character set is %s: Content needs utf8mb4 (leave charset out or set charset=utf8mb4)", s.charset))
	} else if s.results != "" && s.results != "utf8mb4" && s.results != "binary" {
		out = append(out, fmt.Sprintf("character_set_results is %s: Content needs utf8mb4", s.results))
	}
	mode := "," + strings.ToUpper(s.sqlMode) + ","
	if !strings.Contains(mode, ",STRICT_TRANS_TABLES,") && !strings.Contains(mode, ",STRICT_ALL_TABLES,") {
		out = append(out, fmt.Sprintf("sql_mode %q is not strict: a value too long would be cut instead of refused; add STRICT_TRANS_TABLES to the server's sql_mode or the DSN's sql_mode parameter", s.sqlMode))
	}
	return out
}

var versionRE = regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?`)

// checkVersion returns an error wrapping ErrServerVersion unless version
// (SELECT VERSION()) names MySQL 8.0 or later or MariaDB 10.6 or later.
func checkVersion(version string) error {
	v := version
	mariadb := strings.Contains(strings.ToLower(v), "mariadb")
	// Old MariaDB servers announce "5.5.5-10.x.y-MariaDB" to old clients.
	if mariadb && strings.HasPrefix(v, "5.5.5-") {
		v = strings.TrimPrefix(v, "5.5.5-")
	}
	m := versionRE.FindStringSubmatch(v)
	if m == nil {
		return fmt.Errorf("%w: cannot read the server version %q", ErrServerVersion, version)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if mariadb {
		if major > 10 || (major == 10 && minor >= 6) {
			return nil
		}
		return fmt.Errorf("%w: the server is MariaDB %d.%d (%s)", ErrServerVersion, major, minor, version)
	}
	if major >= 8 {
		return nil
	}
	return fmt.Errorf("%w: the server is MySQL %d.%d (%s)", ErrServerVersion, major, minor, version)
}
