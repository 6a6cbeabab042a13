// Package mongodb is a CAP storage on MongoDB, over the official driver
// go.mongodb.org/mongo-driver/v2.
//
// # Layout
//
// As DotNetCore.CAP: database "cap", collections "cap.published" and
// "cap.received" (Options names them; names are validated against
// MongoDB's rules and fail with storage.ErrInvalidIdentifier). Documents
// carry CAP's fields, _id (the Int64 snowflake id), Version, Name, Content
// (string), Added, ExpiresAt (date or null), Retries, StatusName, and
// received ones Group, plus NextAttemptAt (the lease: see package storage)
// and, in received ones, MessageId with a unique index on (MessageId,
// Group). Migrate creates the indexes claims (Version, NextAttemptAt; for
// received rows also Version, Group, NextAttemptAt), the collector
// (StatusName, ExpiresAt) and the dashboard (Added, Name) use. Two more
// collections: "cap.lock" (storage.Leaser) and "cap.claims" (below).
//
// # The transaction type
//
// TTx is *mongo.Session: the value a driver user holds when they run a
// transaction (client.StartSession, then session.WithTransaction), and the
// one Begin, Commit and Rollback need. A session context was the other
// choice; it was not taken because a context is a request's scope, not a
// value to keep and commit later, and the bus needs both a ctx and a tx
// for every call anyway. Inside WithTransaction's callback, pass the
// callback's ctx and the session (or mongo.SessionFromContext(ctx)):
//
//	_, err := sess.WithTransaction(ctx, func(ctx context.Context) (any, error) {
//		if _, err := orders.InsertOne(ctx, order); err != nil {
//			return nil, err
//		}
//		return nil, bus.PublishTx(ctx, sess, "orders.created", order)
//	})
//
// A SubscribeTx handler receives the bus's session and writes through
// mongo.NewSessionContext(ctx, tx).
//
// Multi-document transactions need a replica set or a sharded cluster.
// New reads the server's hello: on a standalone server or one that only
// speaks the protocol (FerretDB), TransactionsSupported reports false and
// Begin, InsertPublishedTx and SetOutcomesTx (hence PublishTx and
// SubscribeTx) fail with ErrNoTransactions; Publish without a transaction
// and plain Subscribe handlers work.
//
// # Claims without row locks
//
// Claim finds due rows (NextAttemptAt <= now) by NextAttemptAt, inserts one
// key per candidate into "cap.claims" whose _id is the table, the row id
// and the row's current NextAttemptAt (the unique _id lets exactly one
// claimer win a row's due time), updates the won rows that are still due to
// NextAttemptAt = now + lease with a claim token, and returns them (read
// back by token when some changed meanwhile). On MongoDB the conditional
// update alone is exclusive; the keys make claims exclusive on servers
// whose updates read and then write (FerretDB 1.24). Keys are swept after
// a minute. A claimer that lost rows to another goes on with the next due
// ones (four rounds at most). A key older than 10 s whose row is still due
// at the key's due time belongs to a claimer that stopped between inserting
// it and updating the row: the next claimer replaces it (deleting it only
// if it is still that old), so such a row waits 10 s, not a minute. On
// FerretDB a claimer stalled for those 10 s between its two steps and
// updating at the same instant as the replacing one could take the row
// too.
//
// "now" is the server's clock: New reads it from hello's localTime and the
// storage keeps the offset from the local clock, measured again every 30
// s; times are computed with it and sent as values. Update pipelines with
// $$NOW were not used: FerretDB 1.24 does not implement them, and one code
// path serves both servers.
//
// Received look-ups: the storage implements storage.ReceivedChecker with
// one find per group of {Group: g, MessageId: {$in: ids}} (500 ids at
// most), over the unique (MessageId, Group) index. The bus then runs a
// plain handler as soon as its delivery is known to be new and writes the
// received document once, with the handler's outcome, instead of a
// document to run followed by an update.
//
// Batches without a transaction: InsertPublished inserts ordered and
// deletes what it inserted when a document fails; InsertReceivedBatch
// inserts unordered, takes a rejection by the (MessageId, Group) index as
// a duplicate and undoes the batch on any other error.
package mongodb
