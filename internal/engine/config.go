// Package engine runs the bus's background work: the dispatcher that sends
// Published rows to the broker, the consumers that store what the broker
// delivers into the Received table, and the executor that runs handlers and
// records their outcomes. The root package builds a Config and owns the API.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-cap/cap/internal/telemetry"
	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/retry"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/transport"
)

// Exception type names written into cap-exception, as CAP writes them, so a
// .NET dashboard or consumer reads them the same way.
const (
	excSend     = "PublisherSentFailedException"
	excExecute  = "SubscriberExecutionFailedException"
	excNotFound = "SubscriberNotFoundException"
	excHeaders  = "MissingHeadersException"
	excDecode   = "DeserializationException"
	excStore    = "StorageRefusedException"
)

// FailedInfo describes a message that used up its retries.
type FailedInfo struct {
	Table   storage.Table // Published (a send) or Received (a handler)
	Message *message.Message
	Err     error
}

// Config holds what the engine needs from the bus.
type Config[TTx any] struct {
	Store     storage.Storage[TTx]
	Transport transport.Transport
	Version   string
	Logger    *slog.Logger

	PollInterval time.Duration
	Lease        time.Duration
	BatchSize    int
	Senders      int
	Workers      int
	Consumers    int // consumer clients per group
	// ReceiveLinger bounds the wait of a delivery for others to be stored
	// with under a steady flow; zero means defaultReceiveLinger.
	ReceiveLinger time.Duration
	// StoreFirst stores every delivery's row before its handler runs, even
	// where the storage would let a plain handler's row be written once
	// with its outcome (see direct.go).
	StoreFirst bool

	SendRetry     retry.Policy
	HandlerRetry  retry.Policy
	SucceedExpiry time.Duration
	FailedExpiry  time.Duration

	InstanceID     string
	HeadersBuilder transport.HeadersBuilder
	OnFailed       func(ctx context.Context, info FailedInfo)
	NewID          func() int64
	// Tel records spans and metrics; nil records nothing.
	Tel *telemetry.Telemetry
}

// permanentError marks a failure that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err so the executor fails the message without retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was wrapped by Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// exception formats err the way CAP's cap-exception header reads.
func exception(typ string, err error) string {
	return fmt.Sprintf("%s-->%v", typ, err)
}

// withException returns the Content of msg with cap-exception set.
func withException(msg *message.Message, exc string) []byte {
	m := &message.Message{Headers: msg.Headers.Clone(), Body: msg.Body}
	m.Headers[message.HeaderException] = exc
	b, err := message.EncodeContent(m)
	if err != nil {
		return nil // keep the old Content
	}
	return b
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
