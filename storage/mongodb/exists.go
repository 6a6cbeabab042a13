package mongodb

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/go-cap/cap/storage"
)

var _ storage.ReceivedChecker = (*Store)(nil)

// maxExistsKeys bounds the message ids of one look-up.
const maxExistsKeys = 500

// ReceivedExists reports for each key whether a received document with
// its (MessageId, Group) exists: one find per group and 500 message ids,
// {Group: g, MessageId: {$in: ids}}, which MongoDB answers from the
// unique (MessageId, Group) index. The consumer asks for the keys of one
// group at a time, so a look-up is one find. (FerretDB filters on the
// group in its backend and on the ids itself.)
func (s *Store) ReceivedExists(ctx context.Context, keys []storage.ReceivedKey) ([]bool, error) {
	out := make([]bool, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	var groups []string
	byGroup := map[string][]int{} // group -> indexes into keys
	for i, k := range keys {
		if _, ok := byGroup[k.Group]; !ok {
			groups = append(groups, k.Group)
		}
		byGroup[k.Group] = append(byGroup[k.Group], i)
	}
	c := s.coll[storage.Received]
	for _, g := range groups {
		idx := byGroup[g]
		for from := 0; from < len(idx); from += maxExistsKeys {
			part := idx[from:min(from+maxExistsKeys, len(idx))]
			ids := make([]any, 0, len(part))
			seen := map[string]bool{}
			for _, i := range part {
				id := keys[i].MessageID
				if seen[id] {
					continue
				}
				seen[id] = true
				ids = append(ids, nullIfEmpty(id))
			}
			cur, err := c.Find(ctx, bson.M{"Group": nullIfEmpty(g), "MessageId": bson.M{"$in": ids}},
				options.Find().SetProjection(bson.M{"_id": 0, "MessageId": 1}))
			if err != nil {
				return nil, fmt.Errorf("mongodb: look up received rows: %w", err)
			}
			var rows []struct {
				MessageID string `bson:"MessageId"`
			}
			if err := cur.All(ctx, &rows); err != nil {
				return nil, fmt.Errorf("mongodb: look up received rows: %w", err)
			}
			found := make(map[string]bool, len(rows))
			for _, r := range rows {
				found[r.MessageID] = true
			}
			for _, i := range part {
				out[i] = found[keys[i].MessageID]
			}
		}
	}
	return out, nil
}

// nullIfEmpty returns nil for "": the documents omit an empty MessageId or
// Group, and a filter on null matches a missing field.
func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
