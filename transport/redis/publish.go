package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/go-cap/cap/message"
	"github.com/go-cap/cap/transport"
)

// ErrNoTopic: the message has no cap-msg-name header to name its stream.
var ErrNoTopic = errors.New("redis: message has no cap-msg-name header")

// Send implements transport.Transport: XADD to the stream named after the
// message's cap-msg-name, with CAP's fields headers and body.
func (t *Transport) Send(ctx context.Context, msg *message.Message) error {
	if errs := t.SendBatch(ctx, []*message.Message{msg}); errs != nil {
		return errs[0]
	}
	return nil
}

// SendBatch implements transport.Transport: one XADD per message, all in
// one pipeline (one round trip), each with its own result. Errors that mean
// Redis cannot be reached wrap transport.ErrUnavailable; the outcome of
// such a message is unknown, and a retry may add it twice.
func (t *Transport) SendBatch(ctx context.Context, msgs []*message.Message) []error {
	return t.PublishBatch(ctx, msgs)()
}

// PublishBatch implements transport.Pipeliner: it sends the pipeline of
// XADDs at once, on a connection of its own, and returns the wait for the
// replies, so that the caller may send the next batch meanwhile.
func (t *Transport) PublishBatch(ctx context.Context, msgs []*message.Message) (wait func() []error) {
	if len(msgs) == 0 {
		return func() []error { return nil }
	}
	errs := make([]error, len(msgs))
	if t.isClosed() {
		for i := range errs {
			errs[i] = fmt.Errorf("redis: send: %w", transport.ErrClosed)
		}
		return func() []error { return errs }
	}
	minID := ""
	if t.cfg.MaxAge > 0 {
		minID = strconv.FormatInt(time.Now().Add(-t.cfg.MaxAge).UnixMilli(), 10) + "-0"
	}
	cmds := make([]*goredis.StringCmd, len(msgs))
	pipe := t.rdb.Pipeline()
	for i, m := range msgs {
		name := m.Name()
		if name == "" {
			errs[i] = ErrNoTopic
			continue
		}
		cmds[i] = pipe.XAdd(ctx, &goredis.XAddArgs{
			Stream: name,
			MaxLen: t.cfg.MaxLen,
			MinID:  minID,
			Approx: t.cfg.MaxLen > 0 || minID != "",
			Values: EntryFields(m),
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if pipe.Len() > 0 {
			_, _ = pipe.Exec(ctx) // each command holds its own error
		}
	}()
	return func() []error {
		<-done
		failed := false
		for i, c := range cmds {
			if c == nil {
				failed = failed || errs[i] != nil
				continue
			}
			if err := c.Err(); err != nil {
				errs[i] = t.wrap("xadd "+msgs[i].Name(), err)
				failed = true
			}
		}
		if !failed {
			return nil
		}
		return errs
	}
}
