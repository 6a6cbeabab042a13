package mongodb

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/go-cap/cap/internal/nodeinfo"
	"github.com/go-cap/cap/storage"
)

var (
	_ storage.NodeRegistry  = (*Store)(nil)
	_ storage.HistoryReader = (*Store)(nil)
)

// nodeDoc is a bus instance's heartbeat in the lock collection, next to the
// leases: _id is the node's key (internal/nodeinfo), LastLockTime when it
// was last seen by the server's clock.
type nodeDoc struct {
	Key          string    `bson:"_id"`
	Name         string    `bson:"Name"`
	Host         string    `bson:"Host"`
	Version      string    `bson:"Version"`
	Started      time.Time `bson:"Started"`
	LastLockTime time.Time `bson:"LastLockTime"`
}

// nodeKeys matches the _id of every node document, on the _id index.
var nodeKeys = bson.M{"$regex": "^" + regexp.QuoteMeta(nodeinfo.KeyPrefix)}

// Heartbeat implements storage.NodeRegistry with a document of the lock
// collection, and deletes the node documents no heartbeat renewed for a
// day.
func (s *Store) Heartbeat(ctx context.Context, n storage.Node) error {
	now, err := s.now(ctx)
	if err != nil {
		return err
	}
	key := nodeinfo.Key(n.ID)
	set := bson.M{"Name": n.Name, "Host": n.Host, "Version": n.Version,
		"Started": n.Started.UTC().Truncate(time.Millisecond), "LastLockTime": now}
	if _, err := s.lock.UpdateOne(ctx, bson.M{"_id": key}, bson.M{"$set": set}, options.UpdateOne().SetUpsert(true)); err != nil {
		return fmt.Errorf("mongodb: heartbeat: %w", err)
	}
	old := bson.M{"$and": bson.A{bson.M{"_id": nodeKeys}, bson.M{"_id": bson.M{"$ne": key}}},
		"LastLockTime": bson.M{"$lt": now.Add(-nodeinfo.Retention)}}
	if _, err := s.lock.DeleteMany(ctx, old); err != nil {
		return fmt.Errorf("mongodb: heartbeat: forget old nodes: %w", err)
	}
	return nil
}

// Nodes implements storage.NodeRegistry.
func (s *Store) Nodes(ctx context.Context, within time.Duration) ([]storage.Node, error) {
	now, err := s.now(ctx)
	if err != nil {
		return nil, err
	}
	cur, err := s.lock.Find(ctx, bson.M{"_id": nodeKeys, "LastLockTime": bson.M{"$gte": now.Add(-within)}},
		options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("mongodb: nodes: %w", err)
	}
	var docs []nodeDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("mongodb: nodes: %w", err)
	}
	out := make([]storage.Node, 0, len(docs))
	for _, d := range docs {
		out = append(out, storage.Node{ID: d.Key[len(nodeinfo.KeyPrefix):], Name: d.Name, Host: d.Host,
			Version: d.Version, Started: d.Started.UTC(), LastSeen: d.LastLockTime.UTC()})
	}
	return out, nil
}

// RemoveNode implements storage.NodeRegistry.
func (s *Store) RemoveNode(ctx context.Context, id string) error {
	if _, err := s.lock.DeleteOne(ctx, bson.M{"_id": nodeinfo.Key(id)}); err != nil {
		return fmt.Errorf("mongodb: remove node: %w", err)
	}
	return nil
}

// CountByHour implements storage.HistoryReader. It reads the Added field of
// the rows added since then through the Added index and counts them by
// hour here: an aggregation by hour ($dateTrunc) needs MongoDB 5.0, and the
// embedded FerretDB the tests run on has none.
func (s *Store) CountByHour(ctx context.Context, t storage.Table, status storage.Status, since time.Time) ([]storage.HourCount, error) {
	if err := storage.CheckHistoryStatus(status); err != nil {
		return nil, err
	}
	cur, err := s.coll[t].Find(ctx, bson.M{"Added": bson.M{"$gte": since.UTC()}, "StatusName": string(status)},
		options.Find().SetProjection(bson.M{"_id": 0, "Added": 1}).SetSort(bson.D{{Key: "Added", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("mongodb: count %s by hour: %w", t, err)
	}
	defer cur.Close(ctx)
	var out []storage.HourCount
	for cur.Next(ctx) {
		var d struct {
			Added time.Time `bson:"Added"`
		}
		if err := cur.Decode(&d); err != nil {
			return nil, fmt.Errorf("mongodb: count %s by hour: %w", t, err)
		}
		h := d.Added.UTC().Truncate(time.Hour)
		if n := len(out); n > 0 && out[n-1].Hour.Equal(h) {
			out[n-1].Count++
		} else {
			out = append(out, storage.HourCount{Hour: h, Count: 1})
		}
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("mongodb: count %s by hour: %w", t, err)
	}
	return out, nil
}
