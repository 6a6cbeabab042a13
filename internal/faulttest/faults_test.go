//go:build faults

package faulttest_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// shortLength is the length of the flow of each single-fault scenario.
const shortLength = 15 * time.Second

// scenario is one fault plan. The producers publish for length while
// inject causes faults; then the harness waits for quiescence and checks.
type scenario struct {
	name      string
	transport string // "" is RabbitMQ
	storage   string // "" is PostgreSQL; "mysql" is MariaDB (storage_mariadb_test.go)
	instances int
	rate      float64 // orders per second per producer
	length    time.Duration
	restarts  bool // restarts the database or the broker
	// crashes: a consumer is killed or the database restarts, the only
	// causes for which the plain handler may run twice.
	crashes bool
	inject  func(ctx context.Context, w *world)
}

// backend names and places the scenarios of one storage or transport: the
// prefix of their names ("mariadb-"), and the storage and transport ("" for
// PostgreSQL and RabbitMQ).
type backend struct{ prefix, storage, transport string }

// killProducer kills the producer every 1 to 3 s.
func (b backend) killProducer() scenario {
	return scenario{
		name: b.prefix + "kill-producer", storage: b.storage, transport: b.transport,
		instances: 1, rate: 100, length: shortLength,
		inject: func(ctx context.Context, w *world) {
			w.killEvery(ctx, time.Second, 3*time.Second, "producer-kill", func() []*proc { return w.producers })
		},
	}
}

// killConsumer kills the consumer every 1 to 3 s.
func (b backend) killConsumer() scenario {
	return scenario{
		name: b.prefix + "kill-consumer", storage: b.storage, transport: b.transport,
		instances: 1, rate: 100, length: shortLength, crashes: true,
		inject: func(ctx context.Context, w *world) {
			w.killEvery(ctx, time.Second, 3*time.Second, "consumer-kill", func() []*proc { return w.consumers })
		},
	}
}

// threeInstances runs three instances and kills one (its producer and
// consumer) every 3 to 6 s.
func (b backend) threeInstances() scenario {
	return scenario{
		name: b.prefix + "three-instances", storage: b.storage, transport: b.transport,
		instances: 3, rate: 50, length: shortLength, crashes: true,
		inject: func(ctx context.Context, w *world) {
			w.killEvery(ctx, 3*time.Second, 6*time.Second, "instance-kill", func() []*proc {
				i := w.pick(len(w.producers))
				return []*proc{w.producers[i], w.consumers[i]}
			})
		},
	}
}

// restartOnce runs restart once, 3 to 5 s into the flow; restarts says that
// it restarts the machine's database or broker (the run must be allowed
// to), crashes that the plain handler may run twice.
func (b backend) restartOnce(name string, restarts, crashes bool, restart func(w *world)) scenario {
	return scenario{
		name: b.prefix + name, storage: b.storage, transport: b.transport,
		instances: 1, rate: 100, length: shortLength, restarts: restarts, crashes: crashes,
		inject: func(ctx context.Context, w *world) {
			if sleep(ctx, w.between(3*time.Second, 5*time.Second)) {
				restart(w)
			}
		},
	}
}

func scenarios(long time.Duration) []scenario {
	var pg backend // PostgreSQL and RabbitMQ
	return []scenario{
		pg.killProducer(),
		pg.killConsumer(),
		pg.restartOnce("restart-rabbitmq", true, false, (*world).restartBroker),
		pg.restartOnce("restart-postgres", true, true, (*world).restartPostgres),
		pg.threeInstances(),
		{
			name: "all", instances: 3, rate: 50, length: long, restarts: true, crashes: true,
			inject: func(ctx context.Context, w *world) { allFaults(ctx, w, long) },
		},
	}
}

// allFaults kills producers, consumers and whole instances every few
// seconds, and meanwhile restarts RabbitMQ (first at a fifth of the length)
// and PostgreSQL (first past the middle), each again every 75 s.
func allFaults(ctx context.Context, w *world, length time.Duration) {
	var wg sync.WaitGroup
	wg.Go(func() {
		w.killEvery(ctx, 1500*time.Millisecond, 4*time.Second, "kill", func() []*proc {
			i := w.pick(len(w.producers))
			switch w.pick(5) {
			case 0, 1:
				return []*proc{w.producers[i]}
			case 2, 3:
				return []*proc{w.consumers[i]}
			default:
				return []*proc{w.producers[i], w.consumers[i]}
			}
		})
	})
	wg.Go(func() {
		start := time.Now()
		const every = 75 * time.Second
		nextRabbit, nextPG := length/5, length*55/100
		for {
			next, restart := nextRabbit, w.restartBroker
			if nextPG < nextRabbit {
				next, restart = nextPG, w.restartPostgres
			}
			if !sleep(ctx, time.Until(start.Add(next))) {
				return
			}
			restart()
			if next == nextRabbit {
				nextRabbit += every
			} else {
				nextPG += every
			}
		}
	})
	wg.Wait()
}

// TestFaults runs every scenario in turn and prints one FAULT line each.
// CAP_FAULT_DURATION sets the length of the "all" scenario (3m by
// default), CAP_FAULT_SEED the random schedule of the faults.
func TestFaults(t *testing.T) {
	long := 3 * time.Minute
	if s := os.Getenv("CAP_FAULT_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(t, err, "CAP_FAULT_DURATION")
		long = d
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CAP_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "CAP_FAULT_SEED")
		seed = v
	}
	e := newEnv(t)
	t.Logf("CAP_FAULT_SEED=%d CAP_FAULT_DURATION=%v", seed, long)
	var lines []string
	all := scenarios(long)
	for _, extra := range extraScenarios {
		all = append(all, extra(long)...)
	}
	for i, sc := range all {
		t.Run(sc.name, func(t *testing.T) {
			lines = append(lines, runScenario(t, e, sc, seed+uint64(i)))
		})
	}
	t.Logf("summary:\n%s", strings.Join(lines, "\n"))
}

func runScenario(t *testing.T, e *env, sc scenario, seed uint64) string {
	tr := sc.transport
	if tr == "" {
		tr = "rabbitmq"
	}
	broker := e.broker(t, tr)
	switch {
	case sc.storage == "mysql":
		e.mariadb(t) // skips (fails in CI) when MariaDB is unreachable
		if sc.restarts {
			e.needMariaDBRestart(t)
		}
	case sc.restarts:
		e.needRestart(t, broker)
	}
	w := e.newWorld(t, sc.name, sc.storage, broker, sc.instances, sc.rate, seed)
	w.start()
	ctx, cancel := context.WithTimeout(context.Background(), sc.length)
	defer cancel()
	sc.inject(ctx, w)
	<-ctx.Done() // the flow lasts the whole length, whatever inject does
	st, quiet := w.finish()

	line := st.line(sc.name)
	fmt.Println(line)
	var kills []string
	for _, p := range append(append([]*proc{}, w.producers...), w.consumers...) {
		if starts, k := p.counts(); k > 0 {
			kills = append(kills, fmt.Sprintf("%s killed %d× (%d starts)", p.name, k, starts))
		}
	}
	t.Logf("%s: faults %v; %s; %d orders rolled back on purpose; quiet %v after the producers stopped",
		sc.name, w.events, strings.Join(kills, ", "), st.RolledBack, quiet.Round(100*time.Millisecond))

	ok := st.Committed > 0 && st.quiet() && st.RolledBackHandled == 0 && st.InboxDuplicates == 0 &&
		st.RolledBackCommit == 0 && (sc.crashes || st.Duplicates == 0)
	if !ok {
		w.explain()
	}
	require.Positive(t, st.Committed, "nothing was committed")
	require.Zero(t, st.Lost, "committed messages not handled by every group")
	require.Zero(t, st.RolledBackHandled, "messages of rolled-back transactions were handled")
	require.Zero(t, st.InboxDuplicates, "the transactional handler's effect happened twice")
	require.Zero(t, st.RolledBackCommit, "orders recorded as rolled back are committed: the harness is wrong")
	require.Zero(t, st.PendingPublished, "published rows left unfinished (not Succeeded, or still due)")
	require.Zero(t, st.PendingReceived, "received rows left unfinished (not Succeeded, or still due)")
	if !sc.crashes {
		require.Zero(t, st.Duplicates, "the plain handler ran twice although no consumer crashed and the database stayed up")
	}
	return line
}
