// Package message holds the message model shared by the bus, storages and
// transports: headers, the stored Content form, ids and CAP's time formats.
package message

import "strconv"

// Header keys written and read by CAP. Their names and value formats are part
// of the wire contract with DotNetCore.CAP services.
const (
	// HeaderMessageID is the message id: a decimal 64-bit snowflake unless the
	// publisher supplied one. It is also the Published row id.
	HeaderMessageID = "cap-msg-id"
	// HeaderMessageName is the topic, after TopicNamePrefix.
	HeaderMessageName = "cap-msg-name"
	// HeaderGroup is set by the consumer to its own group on receive.
	HeaderGroup = "cap-msg-group"
	// HeaderType is an informational type name of the payload.
	HeaderType = "cap-msg-type"
	// HeaderCorrelationID links a callback reply to the message it answers.
	HeaderCorrelationID = "cap-corr-id"
	// HeaderCorrelationSequence counts the hops of a callback chain, from "0".
	HeaderCorrelationSequence = "cap-corr-seq"
	// HeaderCallbackName is the topic a handler's reply is published to.
	HeaderCallbackName = "cap-callback-name"
	// HeaderExecutionInstanceID names the host that executed the handler.
	HeaderExecutionInstanceID = "cap-exec-instance-id"
	// HeaderSentTime is the send time in CAP's invariant format (see FormatSentTime).
	HeaderSentTime = "cap-senttime"
	// HeaderDelayTime is the delay of a delayed message in .NET TimeSpan "c" format.
	HeaderDelayTime = "cap-delaytime"
	// HeaderException describes the last failure as "Type-->message".
	HeaderException = "cap-exception"
	// HeaderTraceParent is the W3C trace context.
	HeaderTraceParent = "traceparent"
	// HeaderTraceState is the W3C trace state.
	HeaderTraceState = "tracestate"
	// HeaderBaggage is the W3C baggage.
	HeaderBaggage = "baggage"
	// HeaderKafkaKey overrides the Kafka record key.
	HeaderKafkaKey = "cap-kafka-key"
)

// Headers maps header keys to values. An empty value stands for CAP's null
// (for example "cap-callback-name" when no callback is set).
type Headers map[string]string

// Clone returns a copy of h.
func (h Headers) Clone() Headers {
	c := make(Headers, len(h)+4)
	for k, v := range h {
		c[k] = v
	}
	return c
}

// Message is a message as it travels: headers and a body. The body is the
// serialized value only (JSON by default); an empty body stands for null.
type Message struct {
	Headers Headers
	Body    []byte
}

// ID returns the cap-msg-id header.
func (m *Message) ID() string { return m.Headers[HeaderMessageID] }

// Name returns the cap-msg-name header (the topic).
func (m *Message) Name() string { return m.Headers[HeaderMessageName] }

// Group returns the cap-msg-group header.
func (m *Message) Group() string { return m.Headers[HeaderGroup] }

// CallbackName returns the cap-callback-name header.
func (m *Message) CallbackName() string { return m.Headers[HeaderCallbackName] }

// CorrelationID returns the cap-corr-id header.
func (m *Message) CorrelationID() string { return m.Headers[HeaderCorrelationID] }

// CorrelationSequence returns cap-corr-seq as an int, 0 when absent or invalid.
func (m *Message) CorrelationSequence() int {
	n, err := strconv.Atoi(m.Headers[HeaderCorrelationSequence])
	if err != nil {
		return 0
	}
	return n
}

// Exception returns the cap-exception header.
func (m *Message) Exception() string { return m.Headers[HeaderException] }

// Clone returns a deep copy of m.
func (m *Message) Clone() *Message {
	c := &Message{Headers: m.Headers.Clone()}
	if m.Body != nil {
		c.Body = append([]byte(nil), m.Body...)
	}
	return c
}
