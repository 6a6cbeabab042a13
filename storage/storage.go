// Package storage defines the Storage interface the bus keeps its Published
// and Received tables behind, and the row and status types shared by every
// storage. Backends live in sub-packages; storagetest is the conformance
// suite each of them passes.
//
// Rows are claimed with a lease instead of CAP's 4-minute window and lock
// table: every row has a NextAttemptAt column, the time it is next due (now
// for a fresh row, the due time of a delayed one, the backoff time after a
// failure, the lease end while an instance works on it). A claim picks due
// rows and pushes NextAttemptAt to now + lease in one statement, so healthy
// instances never receive the same row, and the rows of a crashed instance
// come back when its lease ends. A row that needs no more attempts
// (Succeeded, or Failed for good) has no NextAttemptAt. Due times are
// compared with the database's clock.
package storage

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Status is the StatusName column. The strings are CAP's.
type Status string

// The statuses a row can have.
const (
	StatusScheduled Status = "Scheduled"
	StatusSucceeded Status = "Succeeded"
	StatusFailed    Status = "Failed"
	StatusDelayed   Status = "Delayed"
	StatusQueued    Status = "Queued"
)

// Table selects the Published or the Received table.
type Table int

// The two message tables.
const (
	Published Table = iota
	Received
)

// String returns "published" or "received".
func (t Table) String() string {
	if t == Received {
		return "received"
	}
	return "published"
}

// Errors a storage returns. Callers test them with errors.Is.
var (
	// ErrNotFound: no row with that id.
	ErrNotFound = errors.New("storage: not found")
	// ErrStale: a conditional outcome found the row already Succeeded
	// (another instance completed it first); the transaction must roll back.
	ErrStale = errors.New("storage: row already completed")
	// ErrRefused: the database refused a value of the row itself (text it
	// cannot hold, a value too long for its column). Writing the same row
	// again cannot succeed, unlike after an outage.
	ErrRefused = errors.New("storage: value refused by the database")
	// ErrInvalidIdentifier: a schema, prefix or table name from the options
	// is not a plain identifier.
	ErrInvalidIdentifier = errors.New("storage: invalid identifier")
)

// Record is one row of the Published or Received table.
type Record struct {
	ID        int64
	Version   string
	Name      string
	Group     string // Received only
	MessageID string // Received only: cap-msg-id, unique with Group
	Content   []byte // {"Headers":{...},"Value":...}
	Retries   int
	Added     time.Time  // UTC, set by the storage on insert
	ExpiresAt *time.Time // UTC; nil for NULL
	Status    Status
	// NextAttemptAt is when the row is next due (UTC); nil when it needs no
	// more attempts.
	NextAttemptAt *time.Time

	// DueIn is read on insert only: NextAttemptAt = database now + DueIn.
	// A delayed row uses its delay; a row the inserting instance will send
	// itself uses the lease, so no other instance claims it meanwhile.
	DueIn time.Duration
	// Terminal is read on insert only: the row is stored with no
	// NextAttemptAt (a message that failed for good on arrival).
	Terminal bool
	// ExpiresIn is read on insert only: when positive, ExpiresAt = now +
	// ExpiresIn. A Delayed row gets ExpiresAt = NextAttemptAt, as in CAP.
	ExpiresIn time.Duration
}

// Outcome is the result of one attempt on a claimed row.
type Outcome struct {
	ID      int64
	Status  Status
	Retries int
	// Content replaces the Content column when non-nil (for example with a
	// cap-exception header after a failure).
	Content []byte
	// ExpiresIn sets ExpiresAt = base + ExpiresIn, base being the database's
	// now, or Added when ExpiresFromAdded. Zero leaves ExpiresAt NULL.
	ExpiresIn        time.Duration
	ExpiresFromAdded bool
	// Retry keeps the row due: NextAttemptAt = now + RetryIn. Otherwise
	// NextAttemptAt becomes NULL and no instance claims the row again.
	Retry   bool
	RetryIn time.Duration
	// Force applies the outcome to a row that is already Succeeded. Without
	// it SetOutcomes leaves such a row alone: an instance whose lease ended
	// must not undo the success of the instance that took the row over. A
	// re-drive from the dashboard sets it.
	Force bool
}

// ClaimRequest says which due rows to claim.
type ClaimRequest struct {
	Version string        // only rows of this Version
	Limit   int           // at most this many rows
	Lease   time.Duration // NextAttemptAt = now + Lease for the claimed rows
	// Groups, for the Received table, limits the claim to rows of these
	// groups: an instance only takes the rows it has handlers for. Empty
	// means every group. The Published table ignores it.
	Groups []string
}

// ListQuery selects rows for a dashboard page.
type ListQuery struct {
	Status  Status // empty: any status
	Name    string // substring of Name, case-insensitive; empty: any
	Group   string // Received only; exact; empty: any
	Content string // substring of Content, case-insensitive; empty: any
	Offset  int
	Limit   int // zero: 20
}

// Storage keeps the Published and Received tables. TTx is the transaction
// type business code publishes in (*sql.Tx, pgx.Tx, a Mongo session...).
// Implementations are safe for concurrent use.
type Storage[TTx any] interface {
	// Migrate creates the schema, tables and indexes if absent; it is
	// idempotent and safe when several instances start at once.
	Migrate(ctx context.Context) error

	// Begin starts a transaction of the storage's kind on its database.
	Begin(ctx context.Context) (TTx, error)
	// Commit commits tx.
	Commit(ctx context.Context, tx TTx) error
	// Rollback rolls tx back; rolling back a finished tx is not an error.
	Rollback(ctx context.Context, tx TTx) error

	// InsertPublished stores rows in a transaction of its own, filling in
	// Added, NextAttemptAt and ExpiresAt.
	InsertPublished(ctx context.Context, recs []*Record) error
	// InsertPublishedTx stores rows in the caller's transaction. It need
	// not fill in Added, NextAttemptAt and ExpiresAt: nothing the bus
	// does in the transaction reads them, and a storage may save the
	// statement the cost of returning them.
	InsertPublishedTx(ctx context.Context, tx TTx, recs []*Record) error
	// InsertReceived stores a Received row unless one with the same
	// (MessageID, Group) exists; it reports whether it inserted.
	InsertReceived(ctx context.Context, rec *Record) (inserted bool, err error)
	// InsertReceivedBatch stores several Received rows in one transaction:
	// each unless a row with its (MessageID, Group) exists, in the table or
	// earlier in recs. It reports for each row whether it inserted, and
	// stores nothing when it fails. The consumer stores deliveries with it,
	// so that a burst of them costs one commit.
	InsertReceivedBatch(ctx context.Context, recs []*Record) (inserted []bool, err error)

	// Claim returns up to req.Limit due rows of t, ordered by
	// NextAttemptAt, and leases them to the caller.
	Claim(ctx context.Context, t Table, req ClaimRequest) ([]*Record, error)
	// Reschedule sets NextAttemptAt = now + in for those of the given rows
	// that still await an attempt (NextAttemptAt not NULL): to extend a
	// lease or release a row early. A finished row (Succeeded, or Failed for
	// good) is left alone, so a late extension never makes it due again; to
	// re-drive one, write an Outcome with Retry.
	Reschedule(ctx context.Context, t Table, ids []int64, in time.Duration) error
	// SetOutcomes writes the outcomes of attempts in one transaction. An
	// outcome for a row that is already Succeeded is ignored unless Force.
	SetOutcomes(ctx context.Context, t Table, outs []Outcome) error
	// SetOutcomesTx writes outcomes in the caller's transaction. An outcome
	// whose row is already Succeeded fails with ErrStale, which keeps a
	// transactional handler's effect to once per (MessageID, Group).
	SetOutcomesTx(ctx context.Context, tx TTx, t Table, outs []Outcome) error

	// DeleteExpired deletes up to limit Succeeded or Failed rows of t whose
	// ExpiresAt has passed, and returns how many it deleted.
	DeleteExpired(ctx context.Context, t Table, limit int) (int64, error)

	// Get returns one row, or ErrNotFound.
	Get(ctx context.Context, t Table, id int64) (*Record, error)
	// List returns one page of rows, newest Added first, and the total
	// number of rows matching q.
	List(ctx context.Context, t Table, q ListQuery) ([]*Record, int64, error)
	// Counts returns the number of rows per status.
	Counts(ctx context.Context, t Table) (map[Status]int64, error)
	// Delete removes rows by id.
	Delete(ctx context.Context, t Table, ids []int64) error
}

// Notifier is implemented by storages that learn of committed Published rows
// without polling (PostgreSQL's LISTEN/NOTIFY, the in-memory storage). The
// channel receives a value soon after rows were committed; it is closed when
// ctx ends.
type Notifier interface {
	Notifications(ctx context.Context) (<-chan struct{}, error)
}

// Namer is implemented by storages that report a name for the dashboard
// ("PostgreSql", "MySql", "SQLite", "InMemory" ...).
type Namer interface {
	Name() string
}

// Leaser is implemented by storages that can elect one instance of those
// sharing a database for a periodic job (the expiry collector): a named
// lease held by one owner at a time, until it releases it or the lease
// runs out. The PostgreSQL, MySQL, SQL Server and SQLite storages keep
// leases in CAP's Lock table, MongoDB in its lock collection. Without a
// Leaser every instance runs the job.
type Leaser interface {
	// AcquireLease takes the named lease for owner, or renews it when
	// owner holds it already, for ttl from the database's now. It reports
	// false when another owner holds a lease that has not run out.
	AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	// ReleaseLease gives the lease up if owner holds it, so another
	// instance takes it at once; releasing a lease not held is not an
	// error.
	ReleaseLease(ctx context.Context, name, owner string) error
}

// Backlog is what the outbox gauges report for one table and group.
type Backlog struct {
	Group string // Received only; empty for the Published table
	// Due is the number of rows due and not yet done: Scheduled or Failed
	// rows to retry whose NextAttemptAt has passed.
	Due int64
	// OldestDue is the NextAttemptAt of the oldest of them; zero when Due
	// is zero.
	OldestDue time.Time
	// Failed is the number of rows Failed for good (no NextAttemptAt).
	Failed int64
	// Now is the database's clock when it was read, to measure OldestDue
	// against.
	Now time.Time
}

// BacklogReader is implemented by storages that read the outbox gauges
// with indexed queries, cheaply enough to be read at every metrics
// collection.
type BacklogReader interface {
	// Backlog returns one Backlog per group for the Received table, and one
	// with an empty Group for the Published table, of rows of version.
	Backlog(ctx context.Context, t Table, version string) ([]Backlog, error)
}

// Pinger is implemented by storages that check their database is reachable
// cheaply; the bus's health check uses it (else it begins and rolls back a
// transaction).
type Pinger interface {
	Ping(ctx context.Context) error
}

// ReceivedKey is what identifies a delivery in the Received table: the
// message's cap-msg-id and the group it was received for.
type ReceivedKey struct {
	MessageID string
	Group     string
}

// ReceivedChecker is implemented by storages that tell, in one indexed
// read, which deliveries have a Received row already. With it the consumer
// runs a plain handler (one without a transaction) before the delivery's
// row is written, and writes the row once, already with the handler's
// outcome, instead of a row to run followed by an update of its status.
// Without it every delivery's row is stored first.
type ReceivedChecker interface {
	// ReceivedExists reports for each key whether a Received row with its
	// (MessageID, Group) exists.
	ReceivedExists(ctx context.Context, keys []ReceivedKey) ([]bool, error)
}

// Node is one bus instance running on a database, as its heartbeat
// recorded it (see NodeRegistry).
type Node struct {
	// ID is unique to the bus instance: its Options.InstanceID and a
	// number of its own, so that two processes of one host differ.
	ID string
	// Name is the instance's Options.InstanceID.
	Name string
	// Host is the host name of the instance's machine.
	Host string
	// Version is the library's version the instance runs.
	Version string
	// Started is when the instance's bus started.
	Started time.Time
	// LastSeen is the database's clock at the instance's last heartbeat.
	LastSeen time.Time
}

// NodeRegistry is implemented by storages that keep a heartbeat of the bus
// instances on their database, so that the dashboard lists the instances
// alive. The SQL storages keep it in rows of CAP's Lock table. Started
// is kept to the millisecond at least.
type NodeRegistry interface {
	// Heartbeat records n as seen now, by the database's clock
	// (n.LastSeen is ignored), and forgets nodes that no heartbeat renewed
	// for a day.
	Heartbeat(ctx context.Context, n Node) error
	// Nodes returns the nodes seen within the last within, by ID.
	Nodes(ctx context.Context, within time.Duration) ([]Node, error)
	// RemoveNode forgets node id, as an instance does when it shuts down;
	// removing a node that is not recorded is not an error.
	RemoveNode(ctx context.Context, id string) error
}

// HourCount is the number of rows added in one hour.
type HourCount struct {
	Hour  time.Time // the hour's start, UTC
	Count int64
}

// HistoryReader is implemented by storages that count a table's rows of a
// status by the hour they were added in, in one query over the dashboard's
// (StatusName, Added) index, for the dashboard's 24-hour history.
type HistoryReader interface {
	// CountByHour counts the rows of status (StatusSucceeded or
	// StatusFailed; other statuses are refused) added at or after since,
	// by hour, oldest first; hours without a row are left out.
	CountByHour(ctx context.Context, t Table, status Status, since time.Time) ([]HourCount, error)
}

// CheckHistoryStatus returns an error for a status CountByHour does not
// count.
func CheckHistoryStatus(s Status) error {
	if s != StatusSucceeded && s != StatusFailed {
		return fmt.Errorf("storage: hourly counts of %q rows: only Succeeded and Failed rows are counted", s)
	}
	return nil
}
