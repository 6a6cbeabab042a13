package mongodb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/go-cap/cap/storage"
)

var (
	_ storage.Leaser        = (*Store)(nil)
	_ storage.Pinger        = (*Store)(nil)
	_ storage.BacklogReader = (*Store)(nil)
	_ storage.Namer         = (*Store)(nil)
)

func asCommandError(err error, ce *mongo.CommandError) bool { return errors.As(err, ce) }

// AcquireLease takes or renews the named lease in the lock collection
// (documents _id = name, Instance, LastLockTime, as CAP's, plus Until).
// The taking is a conditional upsert: when the document exists and another
// owner's lease has not run out, the upsert's insert hits the unique _id
// and the lease is refused.
func (s *Store) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	now, err := s.now(ctx)
	if err != nil {
		return false, err
	}
	filter := bson.M{"_id": name, "$or": bson.A{
		bson.M{"Instance": owner},
		bson.M{"Until": bson.M{"$lte": now}},
	}}
	update := bson.M{"$set": bson.M{"Instance": owner, "LastLockTime": now, "Until": now.Add(ttl).Truncate(time.Millisecond)}}
	res, err := s.lock.UpdateOne(ctx, filter, update, options.UpdateOne().SetUpsert(true))
	if mongo.IsDuplicateKeyError(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("mongodb: acquire lease %q: %w", name, err)
	}
	return res.MatchedCount > 0 || res.UpsertedCount > 0, nil
}

// ReleaseLease ends the lease if owner holds it.
func (s *Store) ReleaseLease(ctx context.Context, name, owner string) error {
	_, err := s.lock.UpdateOne(ctx, bson.M{"_id": name, "Instance": owner},
		bson.M{"$set": bson.M{"Instance": "", "Until": time.Time{}.Add(time.Millisecond)}})
	if err != nil {
		return fmt.Errorf("mongodb: release lease %q: %w", name, err)
	}
	return nil
}

// Ping runs the ping command on the storage's database.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.RunCommand(ctx, bson.D{{Key: "ping", Value: 1}}).Err(); err != nil {
		return fmt.Errorf("mongodb: ping: %w", err)
	}
	return nil
}

// Backlog counts due and Failed-for-good rows of version, per group for
// the received collection, with one aggregation each over the claims'
// index (Version, NextAttemptAt) and the status index.
func (s *Store) Backlog(ctx context.Context, t storage.Table, version string) ([]storage.Backlog, error) {
	now, err := s.now(ctx)
	if err != nil {
		return nil, err
	}
	c := s.coll[t]
	group := any(nil)
	if t == storage.Received {
		group = "$Group"
	}
	due, err := aggregate(ctx, c, mongo.Pipeline{
		{{Key: "$match", Value: bson.M{"Version": version, "NextAttemptAt": bson.M{"$lte": now}}}},
		{{Key: "$group", Value: bson.M{"_id": group, "n": bson.M{"$sum": 1}}}},
	})
	if err != nil {
		return nil, fmt.Errorf("mongodb: backlog %s: %w", t, err)
	}
	failed, err := aggregate(ctx, c, mongo.Pipeline{
		{{Key: "$match", Value: bson.M{"StatusName": string(storage.StatusFailed), "Version": version, "NextAttemptAt": nil}}},
		{{Key: "$group", Value: bson.M{"_id": group, "n": bson.M{"$sum": 1}}}},
	})
	if err != nil {
		return nil, fmt.Errorf("mongodb: backlog %s: %w", t, err)
	}
	by := map[string]*storage.Backlog{}
	get := func(g string) *storage.Backlog {
		if b, ok := by[g]; ok {
			return b
		}
		b := &storage.Backlog{Group: g, Now: now}
		by[g] = b
		return b
	}
	for _, r := range due {
		b := get(r.Group)
		b.Due = r.N
		// The oldest due row through the claims' index ($min in $group is
		// not implemented by FerretDB 1.24).
		f := bson.M{"Version": version, "NextAttemptAt": bson.M{"$lte": now}}
		if t == storage.Received {
			f["Group"] = r.Group
		}
		var d struct {
			NextAttemptAt time.Time `bson:"NextAttemptAt"`
		}
		err := c.FindOne(ctx, f, options.FindOne().SetSort(bson.D{{Key: "NextAttemptAt", Value: 1}}).
			SetProjection(bson.M{"NextAttemptAt": 1})).Decode(&d)
		if err != nil && !errors.Is(err, mongo.ErrNoDocuments) {
			return nil, fmt.Errorf("mongodb: backlog %s: %w", t, err)
		}
		b.OldestDue = d.NextAttemptAt.UTC()
	}
	for _, r := range failed {
		get(r.Group).Failed = r.N
	}
	if t == storage.Published && len(by) == 0 {
		get("")
	}
	out := make([]storage.Backlog, 0, len(by))
	for _, b := range by {
		out = append(out, *b)
	}
	return out, nil
}

type backlogRow struct {
	Group string `bson:"_id"`
	N     int64  `bson:"n"`
}

func aggregate(ctx context.Context, c *mongo.Collection, p mongo.Pipeline) ([]backlogRow, error) {
	cur, err := c.Aggregate(ctx, p)
	if err != nil {
		return nil, err
	}
	var rows []backlogRow
	if err := cur.All(ctx, &rows); err != nil {
		return nil, err
	}
	return rows, nil
}
