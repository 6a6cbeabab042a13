// Package nats is the NATS JetStream transport of the bus, on
// github.com/nats-io/nats.go and its jetstream package, with DotNetCore.CAP's
// mapping so that Go and .NET services exchange messages in both
// directions:
//
//   - the subject is cap-msg-name;
//   - a stream per first word of the subject ("orders.created" is in stream
//     "orders"), created by Subscribe when it is missing;
//   - a durable consumer per group and topic, named as CAP names it
//     (DurableName: "cap_queue_billing_v1-orders_created"), with explicit
//     ack, an ack wait of 30 s and, for a new consumer, deliver-new;
//   - messages published with Nats-Msg-Id = cap-msg-id (JetStream drops a
//     second copy within the stream's duplicate window) and every header as
//     a NATS header, the body untouched; a send succeeds only on JetStream's
//     ack;
//   - Ack is JetStream's Ack, Reject its Nak (after Config.NakDelay when
//     set).
//
// Where CAP loses messages or services, the transport does better:
//
//   - a stream's subject list is extended, never replaced, so two services
//     whose topics share a first word do not unbind each other (CAP's update
//     replaces the list with its own topics). JetStream refuses subjects of
//     one stream that intersect, so a subject that intersects another one
//     without covering it is widened until it covers both (at most to
//     "{stream}.>"): the stream may capture more than was subscribed, never
//     less;
//   - streams are created with file storage (Config.Storage), which
//     survives a server restart; CAP's memory streams do not;
//   - the client reconnects forever (CAP sets AllowReconnect = false);
//     while it is disconnected Send, SendBatch and Subscribe fail at once
//     with an error wrapping transport.ErrUnavailable, and consumers resume
//     by themselves when the server is back, creating their stream and
//     consumer again if the server lost them;
//   - CAP's wildcards map to NATS's: '*' stays '*', '#' (one or more
//     words) becomes '>' and ends the subject. Where NATS's rule is wider
//     (its '*' and '>' take any word, CAP's only [0-9a-zA-Z]+; words after
//     a '#'), the consumer checks each delivery with transport.Match and
//     acknowledges and drops the ones CAP's rule does not match, so
//     "p.log.#" never delivers "p.log". A topic whose first word is a
//     wildcard cannot be mapped (its first word names the stream) and is
//     refused with ErrInvalidTopic;
//   - consumers pull (Consume) with at most Config.MaxInFlight deliveries
//     handed out and not yet settled, so the bus's worker pool is the only
//     concurrency limit; Consumer.Close naks what it holds, so those
//     messages come back at once instead of after the ack wait;
//   - SendBatch and transport.Pipeliner use JetStream's asynchronous
//     publish, matching each ack to its message.
//
// A .NET CAP service consumes with push consumers; a Go service of the same
// group therefore cannot share CAP's durable consumer (JetStream refuses to
// turn a push consumer into a pull one) and Subscribe fails with the
// server's error. Services of different groups exchange messages freely.
package nats
