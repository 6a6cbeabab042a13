package mongodb

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// index is one index Migrate creates.
type index struct {
	name   string
	keys   bson.D
	unique bool
}

func asc(fields ...string) bson.D {
	d := make(bson.D, len(fields))
	for i, f := range fields {
		d[i] = bson.E{Key: f, Value: 1}
	}
	return d
}

// messageIndexes are the indexes of both message collections: claims
// (Version, NextAttemptAt), the collector (StatusName, ExpiresAt, CAP's
// compound index), the dashboard's pages (Added) and CAP's single-field
// indexes on Name and Version.
var messageIndexes = []index{
	{name: "Version_NextAttemptAt", keys: asc("Version", "NextAttemptAt")},
	{name: "StatusName_ExpiresAt", keys: asc("StatusName", "ExpiresAt")},
	{name: "Added", keys: bson.D{{Key: "Added", Value: -1}, {Key: "_id", Value: -1}}},
	{name: "Name", keys: asc("Name")},
}

// receivedIndexes are the received collection's own indexes: the unique
// (MessageId, Group) that de-duplicates deliveries, and the per-group
// claims.
var receivedIndexes = []index{
	{name: "MessageId_Group", keys: asc("MessageId", "Group"), unique: true},
	{name: "Version_Group_NextAttemptAt", keys: asc("Version", "Group", "NextAttemptAt")},
}

// Migrate creates the collections and their indexes if absent. Creating
// an index that exists with the same keys is a no-op on the server, so it
// is idempotent and safe when several instances start at once.
func (s *Store) Migrate(ctx context.Context) error {
	sets := []struct {
		c   *mongo.Collection
		idx []index
	}{
		{s.coll[0], messageIndexes},
		{s.coll[1], append(append([]index{}, messageIndexes...), receivedIndexes...)},
		{s.claims, []index{{name: "At", keys: asc("At")}}},
		{s.lock, nil},
	}
	for _, set := range sets {
		if err := s.db.CreateCollection(ctx, set.c.Name()); err != nil && !isNamespaceExists(err) {
			return fmt.Errorf("mongodb: migrate: create %s: %w", set.c.Name(), err)
		}
		if len(set.idx) == 0 {
			continue
		}
		have, err := indexNames(ctx, set.c)
		if err != nil {
			return fmt.Errorf("mongodb: migrate: indexes of %s: %w", set.c.Name(), err)
		}
		var models []mongo.IndexModel
		for _, ix := range set.idx {
			if have[ix.name] {
				continue
			}
			o := options.Index().SetName(ix.name)
			if ix.unique {
				o.SetUnique(true)
			}
			models = append(models, mongo.IndexModel{Keys: ix.keys, Options: o})
		}
		if len(models) == 0 {
			continue
		}
		if _, err := set.c.Indexes().CreateMany(ctx, models); err != nil {
			return fmt.Errorf("mongodb: migrate: indexes of %s: %w", set.c.Name(), err)
		}
	}
	return nil
}

// indexNames lists the names of c's indexes. Migrate creates only the
// missing ones: an instance starting on a migrated database then writes
// nothing (and FerretDB 1.24 fails concurrent createIndexes of existing
// indexes).
func indexNames(ctx context.Context, c *mongo.Collection) (map[string]bool, error) {
	cur, err := c.Indexes().List(ctx)
	if err != nil {
		return nil, err
	}
	var specs []struct {
		Name string `bson:"name"`
	}
	if err := cur.All(ctx, &specs); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, sp := range specs {
		names[sp.Name] = true
	}
	return names, nil
}

// isNamespaceExists reports the error of creating a collection that exists.
func isNamespaceExists(err error) bool {
	var ce mongo.CommandError
	return asCommandError(err, &ce) && (ce.Code == 48 || ce.Name == "NamespaceExists")
}
