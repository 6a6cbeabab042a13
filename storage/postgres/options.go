package postgres

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/go-cap/cap/storage"
)

// DefaultSchema is the schema CAP creates its tables in.
const DefaultSchema = "cap"

// DefaultNotifyInterval is the default Options.NotifyInterval.
const DefaultNotifyInterval = 50 * time.Millisecond

// Options configures a PostgreSQL storage. The zero value means the defaults.
type Options struct {
	// Schema holds the published and received tables. Defaults to
	// DefaultSchema ("cap"), as in CAP. It must be a plain identifier.
	Schema string

	// DisableNotify turns off both the pg_notify sent when rows are inserted
	// and the LISTEN connection behind Notifications. The bus then finds new
	// rows by polling only. Set it behind PgBouncer in transaction pooling
	// mode, where a LISTEN connection does not receive notifications.
	DisableNotify bool

	// NotifyInterval limits the notifications this storage sends. A
	// transaction that runs NOTIFY holds a database-wide lock while it
	// commits, which serialises concurrent committers; so a transaction
	// inserting due rows notifies only when no other did in the last
	// NotifyInterval, and the listener wakes the bus again 1, 3 and 7
	// NotifyIntervals after each notification, for the transactions that
	// committed meanwhile without one. A row committed later than that
	// without a notification waits for the bus's poll. Defaults to
	// DefaultNotifyInterval; a negative value makes every such transaction
	// notify.
	NotifyInterval time.Duration

	// ListenConnString is the connection string of the dedicated connection
	// that LISTENs for new rows, for example when the pool goes through a
	// pooler but the listener can reach PostgreSQL directly. When empty, the
	// listener connects with the configuration of the pool (New) or of a
	// connection of the *sql.DB (NewSQL, which then requires pgx's stdlib
	// driver); it never holds a connection of the pool itself. Hooks of a
	// pgxpool.Config (BeforeConnect, AfterConnect) do not run for it.
	ListenConnString string

	// SyncCommit makes the bus's bookkeeping statements commit as the server
	// is configured. By default each of them (the claims of due rows, the
	// extension and release of leases, the outcomes of sends and handlers,
	// the collector's deletes) sets synchronous_commit to off for its own
	// transaction, so that it does not wait for the WAL to be flushed: the
	// bus writes two of them for every message, and waiting made them
	// compete for the disk with the caller's commits. A crash of the
	// database server (not of the bus) may then lose the last of them (up
	// to three times wal_writer_delay, 600 ms by default); their rows are as
	// they were before, so a message may be sent or handled once more, and
	// none is lost. What must be durable always commits as configured: the
	// caller's transactions (PublishTx, SubscribeTx), Publish without one,
	// and the Received rows the bus stores before it acks the broker.
	SyncCommit bool

	// Logger receives the listener's reconnection warnings. Defaults to
	// slog.Default().
	Logger *slog.Logger
}

// withDefaults returns o with zero values replaced by the defaults, or an
// error when an option cannot work.
func (o Options) withDefaults() (Options, error) {
	if o.Schema == "" {
		o.Schema = DefaultSchema
	}
	if err := storage.ValidateIdentifier("schema", o.Schema); err != nil {
		return o, fmt.Errorf("postgres: %w", err)
	}
	if o.NotifyInterval == 0 {
		o.NotifyInterval = DefaultNotifyInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}
