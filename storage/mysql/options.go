package mysql

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/go-cap/cap/storage"
)

// DefaultTableNamePrefix is the prefix CAP gives its tables: `cap.published`
// and `cap.received`.
const DefaultTableNamePrefix = "cap"

// maxPrefix is the longest prefix whose table names fit MySQL's 64
// characters: the prefix, a dot and "published".
const maxPrefix = 64 - len(".published")

// Options configures a MySQL or MariaDB storage. The zero value means the
// defaults.
type Options struct {
	// TableNamePrefix names the tables: `<prefix>.published` and
	// `<prefix>.received`, one identifier each, in the connection's
	// database, as CAP's TableNamePrefix does. Defaults to
	// DefaultTableNamePrefix ("cap"). It must be a plain identifier of at
	// most 54 characters.
	TableNamePrefix string

	// NotifyInterval is how often Notifications looks for new Published
	// rows (one primary-key lookup). Defaults to DefaultNotifyInterval; a
	// negative value turns the look-ups off, and the bus then finds rows
	// committed with a plain tx.Commit by its poll alone.
	NotifyInterval time.Duration

	// Logger receives the storage's debug messages (a transaction run
	// again after InnoDB chose it as a deadlock victim). Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// withDefaults returns o with zero values replaced by the defaults, or an
// error when an option cannot work.
func (o Options) withDefaults() (Options, error) {
	if o.TableNamePrefix == "" {
		o.TableNamePrefix = DefaultTableNamePrefix
	}
	if err := storage.ValidateIdentifier("table name prefix", o.TableNamePrefix); err != nil {
		return o, fmt.Errorf("mysql: %w", err)
	}
	if len(o.TableNamePrefix) > maxPrefix {
		return o, fmt.Errorf("mysql: %w: table name prefix %q is longer than %d characters (table names are limited to 64)",
			storage.ErrInvalidIdentifier, o.TableNamePrefix, maxPrefix)
	}
	if o.NotifyInterval == 0 {
		o.NotifyInterval = DefaultNotifyInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}
