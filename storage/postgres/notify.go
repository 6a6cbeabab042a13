package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Listener timing. A dropped connection is retried with a doubling backoff;
// an idle connection is pinged now and then, because a read alone does not
// notice a peer that vanished without closing the socket.
const (
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 10 * time.Second
	listenPing       = 30 * time.Second
)

// Notifications LISTENs on a dedicated connection for the notifications
// that transactions inserting due published rows send on commit, and
// signals the returned channel. The channel also receives a value each time
// the listener (re)connects, so a commit it could not hear is never missed;
// it is closed when ctx ends. A dropped connection is re-established with
// backoff while the bus keeps polling.
//
// The connection comes from Options.ListenConnString when set, else from
// the configuration of the pool (New) or of a connection of the *sql.DB
// (NewSQL); it is opened outside the pool and does not count against it.
// With Options.DisableNotify there is no listener: the channel receives
// nothing and is closed when ctx ends.
func (s *Store[TTx]) Notifications(ctx context.Context) (<-chan struct{}, error) {
	if s.opts.DisableNotify {
		ch := make(chan struct{})
		context.AfterFunc(ctx, func() { close(ch) })
		return ch, nil
	}
	config := s.b.connConfig
	if s.opts.ListenConnString != "" {
		cfg, err := pgx.ParseConfig(s.opts.ListenConnString)
		if err != nil {
			return nil, fmt.Errorf("%w: Options.ListenConnString: %w", ErrNoListenConfig, err)
		}
		config = func(context.Context) (*pgx.ConnConfig, error) { return cfg.Copy(), nil }
	}
	l := &listener{
		config: config,
		listen: s.q.listen,
		log:    s.opts.Logger,
		trail:  s.opts.NotifyInterval,
		ch:     make(chan struct{}, 1),
	}
	go l.run(ctx)
	return l.ch, nil
}

type listener struct {
	config func(context.Context) (*pgx.ConnConfig, error)
	listen string
	log    *slog.Logger
	// trail is the first delay of the wake-ups that follow a notification
	// (Options.NotifyInterval); none when not positive.
	trail time.Duration
	ch    chan struct{}
	heard bool // a notification arrived during the last wait
}

// wake signals the channel without blocking; one pending value stands for
// any number of notifications.
func (l *listener) wake() {
	select {
	case l.ch <- struct{}{}:
	default:
	}
}

func (l *listener) run(ctx context.Context) {
	defer close(l.ch)
	backoff := listenBackoffMin
	for {
		listened, err := l.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if listened {
			backoff = listenBackoffMin
		}
		l.log.Warn("postgres: listen connection failed; polling until it is back",
			"err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, listenBackoffMax)
	}
}

// session connects, LISTENs and waits for notifications until the
// connection fails or ctx ends. listened reports whether LISTEN succeeded.
func (l *listener) session(ctx context.Context) (listened bool, err error) {
	cfg, err := l.config(ctx)
	if err != nil {
		return false, err
	}
	cfg.OnNotification = func(*pgconn.PgConn, *pgconn.Notification) {
		l.heard = true
		l.wake()
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, l.listen); err != nil {
		return false, err
	}
	l.wake()
	var (
		lastIO   = time.Now() // of the last read or ping
		next     time.Time    // of the next trailing wake-up; zero for none
		trailing time.Duration
	)
	if l.trail > 0 {
		// Rows committed around the LISTEN may have skipped their NOTIFY
		// because of one sent before it.
		trailing, next = l.trail, lastIO.Add(l.trail)
	}
	for {
		wait := listenPing - time.Since(lastIO)
		if !next.IsZero() {
			wait = min(wait, time.Until(next))
		}
		wctx, cancel := context.WithTimeout(ctx, max(wait, 0))
		l.heard = false
		err := conn.PgConn().WaitForNotification(wctx)
		timedOut := wctx.Err() != nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return true, ctx.Err()
		case err != nil && !timedOut:
			return true, err
		}
		now := time.Now()
		if err == nil || l.heard {
			lastIO = now
		}
		if l.heard && l.trail > 0 {
			// Transactions that skipped their NOTIFY because this one was
			// recent commit around now: look again a little later.
			trailing, next = l.trail, now.Add(l.trail)
			continue
		}
		if !next.IsZero() && !now.Before(next) {
			l.wake()
			if trailing *= 2; trailing <= 4*l.trail {
				next = now.Add(trailing)
			} else {
				next = time.Time{}
			}
		}
		if now.Sub(lastIO) >= listenPing {
			if err := conn.Ping(ctx); err != nil {
				return true, err
			}
			lastIO = time.Now()
		}
	}
}
