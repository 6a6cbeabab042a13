// Package redis is the Redis Streams transport of the bus, on
// github.com/redis/go-redis/v9, with DotNetCore.CAP's mapping so that Go and
// .NET services exchange messages in both directions:
//
//   - the stream key is the message's cap-msg-name (the bus has applied
//     cap.Options.TopicNamePrefix to it);
//   - the consumer group is the bus's group, created with XGROUP CREATE ...
//     $ MKSTREAM (an existing group is kept: BUSYGROUP is ignored);
//   - each entry has two fields, headers (a JSON object of every header,
//     CAP's null as null) and body (the body as a base64 JSON string, as
//     System.Text.Json writes a byte array; "" for an empty body);
//   - Ack is XACK.
//
// Where it does better than CAP:
//
//   - every consumer has a name of its own in its group (CAP names each
//     consumer after its group, so two instances share one pending list);
//   - entries left pending longer than Config.ClaimIdle, by a crashed
//     instance for example, are taken over by another consumer with
//     XAUTOCLAIM (in CAP they wait for that instance to start again);
//   - Reject marks the entry idle and triggers a claim, so a rejected entry
//     is delivered again at once (in CAP it waits for the next start); a
//     closing consumer does the same with its unacknowledged entries;
//   - optional approximate trimming on send, Config.MaxLen (MAXLEN ~) and
//     Config.MaxAge (MINID ~); CAP lets streams grow forever;
//   - an entry without a headers field is delivered without headers, so
//     the bus passes it to cap.Options.CustomHeaders or stores it Failed and
//     acknowledges it; a malformed entry (headers not a JSON object, body
//     not base64) is delivered the same way with the error and its raw
//     fields in headers (see Delivery.Err): it never loops;
//   - SendBatch sends its XADDs in one pipeline (one round trip), and the
//     transport implements transport.Pipeliner.
//
// Wildcards: Redis has none. A topic with CAP's * or # is resolved against
// the stream keys that exist, with SCAN ... MATCH ... TYPE stream filtered
// by CAP's rule, when Subscribe is called and then every
// Config.WildcardRefresh. The group is created on a stream found later at
// the id of the Subscribe call's time, so it receives every entry added
// since, even those added before the stream was found. A stream that does
// not exist yet is found only once something has been sent to it.
//
// Reads are XREADGROUP ... COUNT Config.ReadCount BLOCK Config.Block on a
// connection of the consumer's own. While Redis is down, sends and
// subscriptions fail with errors wrapping transport.ErrUnavailable, and
// consumers retry their reads with a growing pause and go on once Redis is
// back; a group Redis lost is created again. An acknowledgement that failed
// leaves the entry pending, and it is delivered again after ClaimIdle.
// Redis Cluster is not supported (one XREADGROUP reads all of a consumer's
// streams).
package redis
