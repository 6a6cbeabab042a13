package mongodb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/session"

	"github.com/go-cap/cap/storage"
)

// ErrNoTransactions is returned by Begin, InsertPublishedTx and
// SetOutcomesTx when the server cannot run multi-document transactions: a
// standalone mongod (not a replica set, not a mongos) or a server that
// only speaks MongoDB's protocol, such as FerretDB. Publish without a
// transaction and plain handlers work there; PublishTx and SubscribeTx
// need a replica set.
var ErrNoTransactions = errors.New("mongodb: the server does not support multi-document transactions (a replica set or sharded cluster is required)")

// clockEvery is how often the storage reads the server's clock again.
const clockEvery = 30 * time.Second

// claimKeyTTL is how long a claim key is kept; see Claim.
const claimKeyTTL = time.Minute

// claimKeyStale is the age after which a claim key whose row is still due
// at the key's due time is taken for a claimer that stopped between its
// steps 2 and 3 (or whose update the server lost), and is replaced; see
// Claim.
const claimKeyStale = 10 * time.Second

// Store is a storage.Storage on MongoDB whose transaction type is the
// driver's *mongo.Session, with a transaction started on it. It is safe
// for concurrent use.
type Store struct {
	client *mongo.Client
	db     *mongo.Database
	opts   Options
	coll   [2]*mongo.Collection
	lock   *mongo.Collection
	claims *mongo.Collection
	txOK   bool

	mu        sync.Mutex
	offset    time.Duration // server clock - local clock
	measured  time.Time     // local time of the last measure
	lastSweep time.Time     // local time of the last sweep of claim keys
}

var _ storage.Storage[*mongo.Session] = (*Store)(nil)

// hello is the part of the hello command's reply the storage reads.
type hello struct {
	SetName   string    `bson:"setName"`
	Msg       string    `bson:"msg"`
	LocalTime time.Time `bson:"localTime"`
}

// New returns a storage on client. It asks the server (hello) whether it
// runs multi-document transactions and reads its clock; without
// transactions it logs nothing and fails nothing, but Begin,
// InsertPublishedTx and SetOutcomesTx return ErrNoTransactions, and
// TransactionsSupported reports false. Call Migrate before use.
func New(ctx context.Context, client *mongo.Client, opts Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("mongodb: nil client")
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	db := client.Database(o.Database)
	s := &Store{
		client: client, db: db, opts: o,
		coll:   [2]*mongo.Collection{db.Collection(o.Published), db.Collection(o.Received)},
		lock:   db.Collection(o.Lock),
		claims: db.Collection(o.Claims),
	}
	h, err := s.measureClock(ctx)
	if err != nil {
		return nil, err
	}
	s.txOK = h.SetName != "" || h.Msg == "isdbgrid"
	return s, nil
}

// TransactionsSupported reports whether the server runs multi-document
// transactions (a replica set or a sharded cluster), as New found.
func (s *Store) TransactionsSupported() bool { return s.txOK }

// Name is the storage's name for the dashboard.
func (s *Store) Name() string { return "MongoDB" }

// Database returns the database holding the collections.
func (s *Store) Database() *mongo.Database { return s.db }

// measureClock reads the server's clock with hello and keeps its offset
// from the local clock.
func (s *Store) measureClock(ctx context.Context) (hello, error) {
	var h hello
	before := time.Now()
	err := s.client.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&h)
	after := time.Now()
	if err != nil {
		return h, fmt.Errorf("mongodb: hello: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !h.LocalTime.IsZero() {
		mid := before.Add(after.Sub(before) / 2)
		s.offset = h.LocalTime.Sub(mid)
	}
	s.measured = after
	return h, nil
}

// now returns the server's clock, estimated from the local one and the
// offset measured at most clockEvery ago, in UTC at millisecond precision
// (BSON dates).
func (s *Store) now(ctx context.Context) (time.Time, error) {
	s.mu.Lock()
	stale := time.Since(s.measured) > clockEvery
	s.mu.Unlock()
	if stale {
		if _, err := s.measureClock(ctx); err != nil {
			return time.Time{}, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Add(s.offset).UTC().Truncate(time.Millisecond), nil
}

// Begin starts a session with a transaction on it.
func (s *Store) Begin(ctx context.Context) (*mongo.Session, error) {
	if !s.txOK {
		return nil, ErrNoTransactions
	}
	sess, err := s.client.StartSession()
	if err != nil {
		return nil, fmt.Errorf("mongodb: start session: %w", err)
	}
	if err := sess.StartTransaction(); err != nil {
		sess.EndSession(ctx)
		return nil, fmt.Errorf("mongodb: start transaction: %w", err)
	}
	return sess, nil
}

// Commit commits the transaction of a session from Begin and ends the
// session.
func (s *Store) Commit(ctx context.Context, tx *mongo.Session) error {
	defer tx.EndSession(ctx)
	if err := tx.CommitTransaction(ctx); err != nil {
		return fmt.Errorf("mongodb: commit: %w", err)
	}
	return nil
}

// Rollback aborts the transaction of a session from Begin and ends the
// session; a session whose transaction ended already is not an error.
func (s *Store) Rollback(ctx context.Context, tx *mongo.Session) error {
	defer tx.EndSession(ctx)
	err := tx.AbortTransaction(ctx)
	if err == nil || errors.Is(err, session.ErrAbortAfterCommit) || errors.Is(err, session.ErrAbortTwice) || errors.Is(err, session.ErrNoTransactStarted) {
		return nil
	}
	return fmt.Errorf("mongodb: rollback: %w", err)
}

// doc is a document of the published or received collection: CAP's
// fields plus NextAttemptAt, MessageId and the claim token.
type doc struct {
	ID            int64      `bson:"_id"`
	Version       string     `bson:"Version"`
	Group         string     `bson:"Group,omitempty"`
	MessageID     string     `bson:"MessageId,omitempty"`
	Name          string     `bson:"Name"`
	Content       string     `bson:"Content"`
	Added         time.Time  `bson:"Added"`
	ExpiresAt     *time.Time `bson:"ExpiresAt"`
	Retries       int32      `bson:"Retries"`
	StatusName    string     `bson:"StatusName"`
	NextAttemptAt *time.Time `bson:"NextAttemptAt"`
	ClaimToken    string     `bson:"_claimToken,omitempty"`
}

func ptr(t time.Time) *time.Time { return &t }

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	return ptr(t.UTC())
}

// fill sets the values a storage fills in on insert and returns the
// document.
func fill(r *storage.Record, now time.Time) doc {
	r.Added = now
	r.NextAttemptAt, r.ExpiresAt = nil, nil
	if !r.Terminal {
		r.NextAttemptAt = ptr(now.Add(r.DueIn).Truncate(time.Millisecond))
	}
	switch {
	case r.Status == storage.StatusDelayed && r.NextAttemptAt != nil:
		r.ExpiresAt = ptr(*r.NextAttemptAt)
	case r.ExpiresIn > 0:
		r.ExpiresAt = ptr(now.Add(r.ExpiresIn).Truncate(time.Millisecond))
	}
	status := r.Status
	if status == "" {
		status = storage.StatusScheduled
	}
	return doc{
		ID: r.ID, Version: r.Version, Group: r.Group, MessageID: r.MessageID, Name: r.Name,
		Content: string(r.Content), Added: r.Added, ExpiresAt: r.ExpiresAt, Retries: int32(r.Retries),
		StatusName: string(status), NextAttemptAt: r.NextAttemptAt,
	}
}

func (d *doc) record() *storage.Record {
	return &storage.Record{
		ID: d.ID, Version: d.Version, Name: d.Name, Group: d.Group, MessageID: d.MessageID,
		Content: []byte(d.Content), Retries: int(d.Retries), Added: d.Added.UTC(),
		ExpiresAt: utc(d.ExpiresAt), Status: storage.Status(d.StatusName), NextAttemptAt: utc(d.NextAttemptAt),
	}
}

// unfill undoes fill on rows that were not stored.
func unfill(recs []*storage.Record) {
	for _, r := range recs {
		r.Added, r.NextAttemptAt, r.ExpiresAt = time.Time{}, nil, nil
	}
}

// InsertPublished stores rows. Without a transaction it inserts them with
// one ordered insertMany; when that fails it deletes those it inserted, so
// that nothing of the batch stays.
func (s *Store) InsertPublished(ctx context.Context, recs []*storage.Record) error {
	if err := s.insertAll(ctx, s.coll[storage.Published], recs); err != nil {
		return fmt.Errorf("mongodb: insert published: %w", err)
	}
	return nil
}

func (s *Store) insertAll(ctx context.Context, c *mongo.Collection, recs []*storage.Record) error {
	if len(recs) == 0 {
		return nil
	}
	now, err := s.now(ctx)
	if err != nil {
		return err
	}
	docs := make([]any, len(recs))
	for i, r := range recs {
		docs[i] = fill(r, now)
	}
	_, err = c.InsertMany(ctx, docs)
	if err == nil {
		return nil
	}
	// Ordered: the documents before the first error were inserted.
	n := len(recs)
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) && len(bwe.WriteErrors) > 0 {
		n = bwe.WriteErrors[0].Index
	}
	ids := make([]int64, 0, n)
	for _, r := range recs[:n] {
		ids = append(ids, r.ID)
	}
	unfill(recs)
	if len(ids) > 0 {
		if _, derr := c.DeleteMany(context.WithoutCancel(ctx), bson.M{"_id": bson.M{"$in": ids}}); derr != nil {
			return errors.Join(err, fmt.Errorf("undo the batch: %w", derr))
		}
	}
	return err
}

// InsertPublishedTx stores rows in the caller's transaction: tx is the
// session the transaction runs on (the one WithTransaction is called on,
// or mongo.SessionFromContext of its callback's context). It returns
// ErrNoTransactions when the server has none, and an error when tx has no
// transaction in progress.
func (s *Store) InsertPublishedTx(ctx context.Context, tx *mongo.Session, recs []*storage.Record) error {
	if err := s.checkTx(tx); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	now, err := s.now(ctx)
	if err != nil {
		return err
	}
	docs := make([]any, len(recs))
	for i, r := range recs {
		docs[i] = fill(r, now)
	}
	if _, err := s.coll[storage.Published].InsertMany(mongo.NewSessionContext(ctx, tx), docs); err != nil {
		unfill(recs)
		return fmt.Errorf("mongodb: insert published in transaction: %w", err)
	}
	return nil
}

func (s *Store) checkTx(tx *mongo.Session) error {
	if !s.txOK {
		return ErrNoTransactions
	}
	if tx == nil {
		return errors.New("mongodb: nil session")
	}
	return nil
}

// InsertReceived stores a received row unless one with its (MessageId,
// Group) exists; the unique index decides.
func (s *Store) InsertReceived(ctx context.Context, r *storage.Record) (bool, error) {
	ins, err := s.InsertReceivedBatch(ctx, []*storage.Record{r})
	if err != nil {
		return false, err
	}
	return ins[0], nil
}

// InsertReceivedBatch stores received rows, each unless its (MessageId,
// Group) exists in the collection or earlier in recs. It needs no
// transaction: an unordered insertMany stores the rows, a row refused by
// the unique (MessageId, Group) index is a duplicate, and on any other
// error the rows it inserted are deleted again.
func (s *Store) InsertReceivedBatch(ctx context.Context, recs []*storage.Record) ([]bool, error) {
	inserted := make([]bool, len(recs))
	if len(recs) == 0 {
		return inserted, nil
	}
	now, err := s.now(ctx)
	if err != nil {
		return nil, err
	}
	type key struct{ id, group string }
	seen := map[key]bool{}
	var docs []any
	var idx []int // docs[i] is recs[idx[i]]
	for i, r := range recs {
		k := key{r.MessageID, r.Group}
		if seen[k] {
			continue
		}
		seen[k] = true
		docs = append(docs, fill(r, now))
		idx = append(idx, i)
	}
	c := s.coll[storage.Received]
	_, err = c.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	failed := map[int]error{}
	if err != nil {
		var bwe mongo.BulkWriteException
		if !errors.As(err, &bwe) || len(bwe.WriteErrors) == 0 {
			unfill(recs)
			return nil, s.undoReceived(ctx, c, recs, fmt.Errorf("mongodb: insert received: %w", err))
		}
		for _, we := range bwe.WriteErrors {
			failed[we.Index] = we
		}
	}
	for i, j := range idx {
		werr, bad := failed[i]
		if !bad {
			inserted[j] = true
			continue
		}
		r := recs[j]
		dup := false
		if mongo.IsDuplicateKeyError(werr) {
			n, cerr := c.CountDocuments(ctx, keyFilter(r.MessageID, r.Group))
			if cerr != nil {
				werr = cerr
			}
			dup = n > 0
		}
		if !dup {
			var keep []*storage.Record
			for k, ok := range inserted {
				if ok {
					keep = append(keep, recs[k])
				}
			}
			unfill(recs)
			return nil, s.undoReceived(ctx, c, keep, fmt.Errorf("mongodb: insert received row %d: %w", r.ID, werr))
		}
	}
	for j, ok := range inserted {
		if !ok {
			recs[j].Added, recs[j].NextAttemptAt, recs[j].ExpiresAt = time.Time{}, nil, nil
		}
	}
	return inserted, nil
}

func keyFilter(msgID, group string) bson.M {
	f := bson.M{"MessageId": msgID, "Group": group}
	if msgID == "" {
		f["MessageId"] = nil
	}
	if group == "" {
		f["Group"] = nil
	}
	return f
}

// undoReceived deletes the rows of a failed batch that were stored.
func (s *Store) undoReceived(ctx context.Context, c *mongo.Collection, recs []*storage.Record, err error) error {
	if len(recs) == 0 {
		return err
	}
	ids := make([]int64, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	if _, derr := c.DeleteMany(context.WithoutCancel(ctx), bson.M{"_id": bson.M{"$in": ids}}); derr != nil {
		return errors.Join(err, fmt.Errorf("undo the batch: %w", derr))
	}
	return err
}

// claimKey is a document of the claims collection: its _id names a row
// and the due time it was claimed at.
type claimKey struct {
	ID string    `bson:"_id"`
	At time.Time `bson:"At"`
}

func token() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Claim leases up to req.Limit due rows without locks:
//
//  1. find candidates: due rows of the version (and groups), by
//     NextAttemptAt;
//  2. insert one claim key per candidate into the claims collection, its
//     _id made of the table, the row id and the row's current
//     NextAttemptAt: the unique _id lets one claimer of a due time win;
//  3. updateMany the won rows that are still due: NextAttemptAt = now +
//     Lease and a fresh claim token;
//  4. read back the rows carrying the token.
//
// On MongoDB step 3 alone is exclusive (a document's update is atomic);
// step 2 makes it so on servers whose conditional updates are not (FerretDB
// reads and then writes). A claim key outlives its use by claimKeyTTL and
// is then swept.
//
// A claimer that finds a row still due at the due time of a claim key
// older than claimKeyStale knows that the key's owner did not take the row
// (it stopped between steps 2 and 3); it deletes that key, only if it is
// still that old, and inserts its own, so such a row waits claimKeyStale,
// not claimKeyTTL. The owner, were it only slow, still cannot take the row
// on MongoDB: its step 3 asks for a due time the new claimer's lease has
// moved.
func (s *Store) Claim(ctx context.Context, t storage.Table, req storage.ClaimRequest) ([]*storage.Record, error) {
	if req.Limit <= 0 {
		return nil, nil
	}
	now, err := s.now(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.sweepClaims(ctx, now); err != nil {
		return nil, err
	}
	// Claimers racing for the same first due rows lose some of them to one
	// another; a claimer that lost rows goes on with the next due ones, a
	// few rounds at most.
	var out []*storage.Record
	var skip []int64
	for range claimRounds {
		got, lost, err := s.claimOnce(ctx, t, req, now, skip)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
		req.Limit -= len(got)
		if len(lost) == 0 || req.Limit <= 0 {
			break
		}
		skip = append(skip, lost...)
	}
	return out, nil
}

// claimRounds bounds the rounds of one Claim.
const claimRounds = 4

// claimOnce runs the four steps of Claim once, over due rows not in skip;
// it returns the rows it claimed and the ids it lost to other claimers.
func (s *Store) claimOnce(ctx context.Context, t storage.Table, req storage.ClaimRequest, now time.Time, skip []int64) ([]*storage.Record, []int64, error) {
	c := s.coll[t]
	filter := bson.M{"Version": req.Version, "NextAttemptAt": bson.M{"$lte": now}}
	if t == storage.Received && len(req.Groups) > 0 {
		filter["Group"] = bson.M{"$in": req.Groups}
	}
	if len(skip) > 0 {
		filter["_id"] = bson.M{"$nin": skip}
	}
	cur, err := c.Find(ctx, filter, options.Find().
		SetSort(bson.D{{Key: "NextAttemptAt", Value: 1}}).
		SetLimit(int64(req.Limit)))
	if err != nil {
		return nil, nil, fmt.Errorf("mongodb: claim %s: %w", t, err)
	}
	var cands []doc
	if err := cur.All(ctx, &cands); err != nil {
		return nil, nil, fmt.Errorf("mongodb: claim %s: %w", t, err)
	}
	if len(cands) == 0 {
		return nil, nil, nil
	}
	keys := make([]any, len(cands))
	for i, cd := range cands {
		keys[i] = claimKey{ID: fmt.Sprintf("%s/%d/%d", t, cd.ID, cd.NextAttemptAt.UnixMilli()), At: now}
	}
	lost, err := s.insertKeys(ctx, keys)
	if err != nil {
		return nil, nil, fmt.Errorf("mongodb: claim %s: %w", t, err)
	}
	if len(lost) > 0 {
		if err := s.replaceStale(ctx, keys, lost, now); err != nil {
			return nil, nil, fmt.Errorf("mongodb: claim %s: %w", t, err)
		}
	}
	won := make([]int64, 0, len(cands))
	var lostIDs []int64
	for i, cd := range cands {
		if lost[i] {
			lostIDs = append(lostIDs, cd.ID)
		} else {
			won = append(won, cd.ID)
		}
	}
	if len(won) == 0 {
		return nil, lostIDs, nil
	}
	tok := token()
	lease := now.Add(req.Lease).Truncate(time.Millisecond)
	res, err := c.UpdateMany(ctx,
		bson.M{"_id": bson.M{"$in": won}, "NextAttemptAt": bson.M{"$lte": now}},
		bson.M{"$set": bson.M{"NextAttemptAt": lease, "_claimToken": tok}})
	if err != nil {
		return nil, nil, fmt.Errorf("mongodb: claim %s: %w", t, err)
	}
	out := make([]*storage.Record, 0, len(won))
	if res.ModifiedCount == int64(len(won)) {
		// Every won row was updated: they are the candidates as found,
		// with the lease.
		for i := range cands {
			if !lost[i] {
				r := cands[i].record()
				r.NextAttemptAt = ptr(lease)
				out = append(out, r)
			}
		}
		return out, lostIDs, nil
	}
	// Some won rows changed since they were found: read back those that
	// carry the token.
	cur, err = c.Find(ctx, bson.M{"_id": bson.M{"$in": won}, "_claimToken": tok})
	if err != nil {
		return nil, nil, fmt.Errorf("mongodb: claim %s: read back: %w", t, err)
	}
	var docs []doc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, nil, fmt.Errorf("mongodb: claim %s: read back: %w", t, err)
	}
	// Order by the due time the rows had, as found.
	order := make(map[int64]int, len(cands))
	for i, cd := range cands {
		order[cd.ID] = i
	}
	slices.SortFunc(docs, func(a, b doc) int { return order[a.ID] - order[b.ID] })
	for i := range docs {
		out = append(out, docs[i].record())
	}
	return out, lostIDs, nil
}

// insertKeys inserts the claim keys and returns the indexes of those that
// another claimer holds.
func (s *Store) insertKeys(ctx context.Context, keys []any) (map[int]bool, error) {
	lost := map[int]bool{}
	if _, err := s.claims.InsertMany(ctx, keys, options.InsertMany().SetOrdered(false)); err != nil {
		var bwe mongo.BulkWriteException
		if !errors.As(err, &bwe) || len(bwe.WriteErrors) == 0 {
			return nil, err
		}
		for _, we := range bwe.WriteErrors {
			if we.Code != 11000 && we.Code != 11001 && we.Code != 12582 {
				return nil, err
			}
			lost[we.Index] = true
		}
	}
	return lost, nil
}

// replaceStale deletes the lost keys older than claimKeyStale (their rows
// were found still due at the keys' due times, so their owners did not
// take them) and inserts this claimer's instead; the keys it then holds
// leave lost.
func (s *Store) replaceStale(ctx context.Context, keys []any, lost map[int]bool, now time.Time) error {
	ids := make([]string, 0, len(lost))
	for i := range lost {
		ids = append(ids, keys[i].(claimKey).ID)
	}
	res, err := s.claims.DeleteMany(ctx, bson.M{"_id": bson.M{"$in": ids}, "At": bson.M{"$lt": now.Add(-claimKeyStale)}})
	if err != nil {
		return fmt.Errorf("replace stale claim keys: %w", err)
	}
	if res.DeletedCount == 0 {
		return nil
	}
	idx := make([]int, 0, len(lost))
	again := make([]any, 0, len(lost))
	for i := range lost {
		idx = append(idx, i)
		again = append(again, keys[i])
	}
	still, err := s.insertKeys(ctx, again)
	if err != nil {
		return fmt.Errorf("replace stale claim keys: %w", err)
	}
	for j, i := range idx {
		if !still[j] {
			delete(lost, i)
		}
	}
	return nil
}

// sweepClaims deletes the claim keys older than claimKeyTTL, at most once
// per claimKeyTTL/2 in this process.
func (s *Store) sweepClaims(ctx context.Context, now time.Time) error {
	s.mu.Lock()
	due := time.Since(s.lastSweep) > claimKeyTTL/2
	if due {
		s.lastSweep = time.Now()
	}
	s.mu.Unlock()
	if !due {
		return nil
	}
	if _, err := s.claims.DeleteMany(ctx, bson.M{"At": bson.M{"$lt": now.Add(-claimKeyTTL)}}); err != nil {
		return fmt.Errorf("mongodb: sweep claim keys: %w", err)
	}
	return nil
}

// Reschedule sets NextAttemptAt = now + in on the rows that still have one.
func (s *Store) Reschedule(ctx context.Context, t storage.Table, ids []int64, in time.Duration) error {
	if len(ids) == 0 {
		return nil
	}
	now, err := s.now(ctx)
	if err != nil {
		return err
	}
	_, err = s.coll[t].UpdateMany(ctx,
		bson.M{"_id": bson.M{"$in": ids}, "NextAttemptAt": bson.M{"$ne": nil}},
		bson.M{"$set": bson.M{"NextAttemptAt": now.Add(in).Truncate(time.Millisecond)}})
	if err != nil {
		return fmt.Errorf("mongodb: reschedule %s: %w", t, err)
	}
	return nil
}

// outcomeUpdate returns the $set of an outcome; added is the row's Added.
func outcomeUpdate(o storage.Outcome, now, added time.Time) bson.M {
	set := bson.M{"StatusName": string(o.Status), "Retries": int32(o.Retries), "ExpiresAt": nil, "NextAttemptAt": nil}
	if o.Content != nil {
		set["Content"] = string(o.Content)
	}
	if o.ExpiresIn > 0 {
		base := now
		if o.ExpiresFromAdded {
			base = added
		}
		set["ExpiresAt"] = base.Add(o.ExpiresIn).Truncate(time.Millisecond)
	}
	if o.Retry {
		set["NextAttemptAt"] = now.Add(o.RetryIn).Truncate(time.Millisecond)
	}
	return bson.M{"$set": set}
}

// addedOf reads Added of the rows whose outcomes expire from it.
func (s *Store) addedOf(ctx context.Context, c *mongo.Collection, outs []storage.Outcome) (map[int64]time.Time, error) {
	var ids []int64
	for _, o := range outs {
		if o.ExpiresIn > 0 && o.ExpiresFromAdded {
			ids = append(ids, o.ID)
		}
	}
	added := map[int64]time.Time{}
	if len(ids) == 0 {
		return added, nil
	}
	cur, err := c.Find(ctx, bson.M{"_id": bson.M{"$in": ids}}, options.Find().SetProjection(bson.M{"Added": 1}))
	if err != nil {
		return nil, err
	}
	var rows []struct {
		ID    int64     `bson:"_id"`
		Added time.Time `bson:"Added"`
	}
	if err := cur.All(ctx, &rows); err != nil {
		return nil, err
	}
	for _, r := range rows {
		added[r.ID] = r.Added.UTC()
	}
	return added, nil
}

func outcomeFilter(o storage.Outcome) bson.M {
	f := bson.M{"_id": o.ID}
	if !o.Force {
		f["StatusName"] = bson.M{"$ne": string(storage.StatusSucceeded)}
	}
	return f
}

// SetOutcomes writes outcomes with one unordered bulk write of multi
// updates, one per distinct update: a batch of Succeeded rows is one
// updateMany over their ids. An outcome for a Succeeded row is ignored
// unless Force.
//
// Updates are multi (updateMany), never updateOne, even for one row:
// FerretDB 1.24 keeps the read of every non-multi update of a command open
// until the command ends, each read holding one of its 100 SQLite
// connections, so a command of ~100 updateOne entries (or a few of them at
// once) waits for a connection forever and FerretDB stalls. A multi update
// reads to the end and frees its connection before the next entry.
// Grouping also turns one scan per row into one per distinct update on
// FerretDB, which scans a collection for any filter but a string _id.
func (s *Store) SetOutcomes(ctx context.Context, t storage.Table, outs []storage.Outcome) error {
	if len(outs) == 0 {
		return nil
	}
	c := s.coll[t]
	now, err := s.now(ctx)
	if err != nil {
		return err
	}
	added, err := s.addedOf(ctx, c, outs)
	if err != nil {
		return fmt.Errorf("mongodb: set outcomes %s: %w", t, err)
	}
	if _, err := c.BulkWrite(ctx, outcomeModels(outs, now, added), options.BulkWrite().SetOrdered(false)); err != nil {
		return fmt.Errorf("mongodb: set outcomes %s: %w", t, err)
	}
	return nil
}

// outcomeKey is what makes two outcomes the same update.
type outcomeKey struct {
	status          storage.Status
	retries         int
	content         string
	hasContent      bool
	expiresAt, next time.Time
	retry, force    bool
}

// outcomeModels returns one updateMany per distinct update of outs, in the
// order of their first outcome.
func outcomeModels(outs []storage.Outcome, now time.Time, added map[int64]time.Time) []mongo.WriteModel {
	var keys []outcomeKey
	ids := map[outcomeKey][]int64{}
	first := map[outcomeKey]storage.Outcome{}
	for _, o := range outs {
		k := outcomeKey{status: o.Status, retries: o.Retries, content: string(o.Content), hasContent: o.Content != nil,
			retry: o.Retry, force: o.Force}
		if o.ExpiresIn > 0 {
			base := now
			if o.ExpiresFromAdded {
				base = added[o.ID]
			}
			k.expiresAt = base.Add(o.ExpiresIn).Truncate(time.Millisecond)
		}
		if o.Retry {
			k.next = now.Add(o.RetryIn).Truncate(time.Millisecond)
		}
		if _, ok := ids[k]; !ok {
			keys = append(keys, k)
			first[k] = o
		}
		ids[k] = append(ids[k], o.ID)
	}
	models := make([]mongo.WriteModel, len(keys))
	for i, k := range keys {
		o := first[k]
		f := outcomeFilter(o)
		if len(ids[k]) > 1 {
			f["_id"] = bson.M{"$in": ids[k]}
		}
		models[i] = mongo.NewUpdateManyModel().SetFilter(f).SetUpdate(outcomeUpdate(o, now, added[o.ID]))
	}
	return models
}

// SetOutcomesTx writes outcomes in the caller's transaction; an outcome
// whose row is Succeeded fails with storage.ErrStale.
func (s *Store) SetOutcomesTx(ctx context.Context, tx *mongo.Session, t storage.Table, outs []storage.Outcome) error {
	if err := s.checkTx(tx); err != nil {
		return err
	}
	if len(outs) == 0 {
		return nil
	}
	sctx := mongo.NewSessionContext(ctx, tx)
	c := s.coll[t]
	now, err := s.now(ctx)
	if err != nil {
		return err
	}
	added, err := s.addedOf(sctx, c, outs)
	if err != nil {
		return fmt.Errorf("mongodb: set outcomes %s: %w", t, err)
	}
	for _, o := range outs {
		o.Force = false
		res, err := c.UpdateOne(sctx, outcomeFilter(o), outcomeUpdate(o, now, added[o.ID]))
		if err != nil {
			return fmt.Errorf("mongodb: set outcome of %s row %d: %w", t, o.ID, err)
		}
		if res.MatchedCount > 0 {
			continue
		}
		n, err := c.CountDocuments(sctx, bson.M{"_id": o.ID})
		if err != nil {
			return fmt.Errorf("mongodb: set outcome of %s row %d: %w", t, o.ID, err)
		}
		if n == 0 {
			return fmt.Errorf("mongodb: set outcome of %s row %d: %w", t, o.ID, storage.ErrNotFound)
		}
		return fmt.Errorf("mongodb: set outcome of %s row %d: %w", t, o.ID, storage.ErrStale)
	}
	return nil
}

// DeleteExpired deletes up to limit Succeeded or Failed rows whose
// ExpiresAt has passed, through the (StatusName, ExpiresAt) index.
func (s *Store) DeleteExpired(ctx context.Context, t storage.Table, limit int) (int64, error) {
	if limit <= 0 {
		return 0, nil
	}
	now, err := s.now(ctx)
	if err != nil {
		return 0, err
	}
	c := s.coll[t]
	filter := bson.M{
		"StatusName": bson.M{"$in": []string{string(storage.StatusSucceeded), string(storage.StatusFailed)}},
		"ExpiresAt":  bson.M{"$lt": now},
	}
	cur, err := c.Find(ctx, filter, options.Find().SetLimit(int64(limit)).SetProjection(bson.M{"_id": 1}))
	if err != nil {
		return 0, fmt.Errorf("mongodb: delete expired %s: %w", t, err)
	}
	var rows []struct {
		ID int64 `bson:"_id"`
	}
	if err := cur.All(ctx, &rows); err != nil {
		return 0, fmt.Errorf("mongodb: delete expired %s: %w", t, err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	filter["_id"] = bson.M{"$in": ids}
	res, err := c.DeleteMany(ctx, filter)
	if err != nil {
		return 0, fmt.Errorf("mongodb: delete expired %s: %w", t, err)
	}
	return res.DeletedCount, nil
}

// Get returns one row, or an error wrapping storage.ErrNotFound.
func (s *Store) Get(ctx context.Context, t storage.Table, id int64) (*storage.Record, error) {
	var d doc
	err := s.coll[t].FindOne(ctx, bson.M{"_id": id}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, fmt.Errorf("mongodb: %s row %d: %w", t, id, storage.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("mongodb: get %s row %d: %w", t, id, err)
	}
	return d.record(), nil
}

// List returns one page of rows, newest Added first, and the number of
// rows matching q. Name and Content match as literal, case-insensitive
// substrings.
func (s *Store) List(ctx context.Context, t storage.Table, q storage.ListQuery) ([]*storage.Record, int64, error) {
	filter := bson.M{}
	if q.Status != "" {
		filter["StatusName"] = string(q.Status)
	}
	if q.Name != "" {
		filter["Name"] = bson.M{"$regex": regexp.QuoteMeta(q.Name), "$options": "i"}
	}
	if q.Group != "" && t == storage.Received {
		filter["Group"] = q.Group
	}
	if q.Content != "" {
		filter["Content"] = bson.M{"$regex": regexp.QuoteMeta(q.Content), "$options": "i"}
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 20
	}
	c := s.coll[t]
	total, err := c.CountDocuments(ctx, filter)
	if err != nil {
		return nil, 0, fmt.Errorf("mongodb: list %s: %w", t, err)
	}
	cur, err := c.Find(ctx, filter, options.Find().
		SetSort(bson.D{{Key: "Added", Value: -1}, {Key: "_id", Value: -1}}).
		SetSkip(int64(max(q.Offset, 0))).SetLimit(int64(limit)))
	if err != nil {
		return nil, 0, fmt.Errorf("mongodb: list %s: %w", t, err)
	}
	var docs []doc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, 0, fmt.Errorf("mongodb: list %s: %w", t, err)
	}
	out := make([]*storage.Record, len(docs))
	for i := range docs {
		out[i] = docs[i].record()
	}
	return out, total, nil
}

// Counts returns the number of rows per status.
func (s *Store) Counts(ctx context.Context, t storage.Table) (map[storage.Status]int64, error) {
	cur, err := s.coll[t].Aggregate(ctx, mongo.Pipeline{
		{{Key: "$group", Value: bson.M{"_id": "$StatusName", "n": bson.M{"$sum": 1}}}},
	})
	if err != nil {
		return nil, fmt.Errorf("mongodb: counts %s: %w", t, err)
	}
	var rows []struct {
		Status string `bson:"_id"`
		N      int64  `bson:"n"`
	}
	if err := cur.All(ctx, &rows); err != nil {
		return nil, fmt.Errorf("mongodb: counts %s: %w", t, err)
	}
	out := map[storage.Status]int64{}
	for _, r := range rows {
		out[storage.Status(r.Status)] = r.N
	}
	return out, nil
}

// Delete removes rows by id.
func (s *Store) Delete(ctx context.Context, t storage.Table, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := s.coll[t].DeleteMany(ctx, bson.M{"_id": bson.M{"$in": ids}}); err != nil {
		return fmt.Errorf("mongodb: delete %s: %w", t, err)
	}
	return nil
}
