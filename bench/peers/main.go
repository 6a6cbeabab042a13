// Command peers measures the library against two other Go libraries that
// publish from a business transaction, in the same run, on the same
// PostgreSQL and RabbitMQ, with the same business statement, payload and
// writers:
//
//   - cap: PublishTx in the business transaction; the bus sends to RabbitMQ
//     (publisher confirms) and one group handles each message.
//   - watermill: watermill-sql's PostgreSQL publisher in the business
//     transaction, writing to the forwarder's topic; watermill's Forwarder
//     moves the messages to watermill-amqp (durable, ConfirmDelivery), whose
//     subscriber handles each message.
//   - river: River's InsertTx in the business transaction; River's workers
//     run each job (River is a job queue: there is no broker in its path).
//
// It lives in a module of its own, so the library never depends on them.
// Run it from bench/peers:
//
//	go run . SCENARIO [flags]
//
// Scenarios:
//
//	publish-overhead  W writers commit business transactions (an order row
//	                  and the library's publish) with every library's
//	                  background running; baseline: the same transactions
//	                  with a plain insert of a same-size row. The phases
//	                  alternate in rounds. tx/s of the writers' time
//	                  (publish-overhead), and of the time until the
//	                  library's consumer had every message it published
//	                  (publish-overhead-consumed; no phase runs meanwhile).
//	burn-down         N messages stored with each library's background
//	                  stopped, then started; N over the time until the
//	                  consumer has received them all. Baseline: N raw sends
//	                  to RabbitMQ with asynchronous confirms. msg/s.
//	end-to-end        W producers publish for D while the consumer runs;
//	                  handled msg/s against the producers' commit rate.
//
// Each line of results has the form
//
//	RESULT scenario=<s> lib=<cap|watermill|river> value=<n> unit=<u> baseline=<n> ratio=<value/baseline>
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"
)

type config struct {
	scenario string
	libs     []string
	writers  int
	duration time.Duration
	rounds   int
	n        int
	size     int
	pgURL    string
	amqpURL  string
}

var allLibs = []string{"cap", "watermill", "river"}

func main() {
	cfg, err := parse(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func parse(args []string) (*config, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return nil, errors.New("usage: go run . publish-overhead|burn-down|end-to-end [flags]")
	}
	cfg := &config{scenario: args[0]}
	if !slices.Contains([]string{"publish-overhead", "burn-down", "end-to-end"}, cfg.scenario) {
		return nil, fmt.Errorf("unknown scenario %q", cfg.scenario)
	}
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	libs := fs.String("libs", strings.Join(allLibs, ","), "libraries to run, comma-separated: "+strings.Join(allLibs, ","))
	fs.IntVar(&cfg.writers, "writers", 16, "concurrent writers (publish-overhead, end-to-end)")
	fs.DurationVar(&cfg.duration, "duration", 0, "publish-overhead: total per library, split into -rounds (default 20s); end-to-end: per library (default 10s)")
	fs.IntVar(&cfg.rounds, "rounds", 4, "publish-overhead: alternating rounds")
	fs.IntVar(&cfg.n, "n", 20000, "burn-down: messages")
	fs.IntVar(&cfg.size, "size", 1024, "payload bytes")
	fs.StringVar(&cfg.pgURL, "postgres", env("CAP_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL URL")
	fs.StringVar(&cfg.amqpURL, "rabbitmq", env("CAP_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ URL")
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	for _, l := range strings.Split(*libs, ",") {
		if !slices.Contains(allLibs, l) {
			return nil, fmt.Errorf("unknown library %q", l)
		}
		cfg.libs = append(cfg.libs, l)
	}
	if cfg.duration == 0 {
		cfg.duration = 10 * time.Second
		if cfg.scenario == "publish-overhead" {
			cfg.duration = 20 * time.Second
		}
	}
	if cfg.writers < 1 || cfg.rounds < 1 || cfg.n < 1 || cfg.size < 16 {
		return nil, errors.New("-writers, -rounds, -n must be positive and -size at least 16")
	}
	return cfg, nil
}

func run(ctx context.Context, cfg *config) error {
	w, err := openWorld(ctx, cfg)
	if err != nil {
		return err
	}
	defer w.close()
	fmt.Printf("%s writers=%d size=%d libs=%s\n", cfg.scenario, cfg.writers, cfg.size, strings.Join(cfg.libs, ","))
	switch cfg.scenario {
	case "publish-overhead":
		return publishOverhead(ctx, cfg, w)
	case "burn-down":
		return burnDown(ctx, cfg, w)
	default:
		return endToEnd(ctx, cfg, w)
	}
}

func result(scenario, lib string, value float64, unit string, baseline float64) {
	ratio := 0.0
	if baseline > 0 {
		ratio = value / baseline
	}
	fmt.Printf("RESULT scenario=%s lib=%s value=%.0f unit=%s baseline=%.0f ratio=%.3f\n", scenario, lib, value, unit, baseline, ratio)
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// publishOverhead alternates the baseline and each library in rounds, the
// order rotating every round, so that what drifts during a run weighs on
// all alike.
func publishOverhead(ctx context.Context, cfg *config, w *world) error {
	libs, err := w.startLibs(ctx, cfg.libs)
	if err != nil {
		return err
	}
	defer stopLibs(libs)
	type tally struct {
		n       int64
		elapsed time.Duration // the writers' time
		drained time.Duration // then until the consumer had every message
	}
	phases := append([]string{"baseline"}, cfg.libs...)
	tallies := map[string]*tally{}
	for _, p := range phases {
		tallies[p] = &tally{}
	}
	op := func(name string) func(ctx context.Context) error {
		if name == "baseline" {
			return w.baselineTx
		}
		return libs[name].publishTx
	}
	for _, p := range phases { // warm-up
		if _, _, err := closedLoop(ctx, cfg.writers, time.Second, op(p)); err != nil {
			return fmt.Errorf("warm-up %s: %w", p, err)
		}
	}
	for _, l := range libs {
		if err := l.drain(ctx, time.Minute); err != nil {
			return err
		}
	}
	per := cfg.duration / time.Duration(cfg.rounds)
	for r := range cfg.rounds {
		order := slices.Clone(phases)
		for range r % len(order) {
			order = append(order[1:], order[0])
		}
		for _, p := range order {
			n, elapsed, err := closedLoop(ctx, cfg.writers, per, op(p))
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if l, ok := libs[p]; ok {
				start := time.Now()
				if err := l.drain(ctx, 2*time.Minute); err != nil {
					return err
				}
				tallies[p].drained += time.Since(start)
			}
			tallies[p].n += n
			tallies[p].elapsed += elapsed
		}
	}
	base := rate(tallies["baseline"].n, tallies["baseline"].elapsed)
	fmt.Printf("baseline (order insert + plain insert): %.0f tx/s\n", base)
	for _, l := range cfg.libs {
		t := tallies[l]
		v, consumed := rate(t.n, t.elapsed), rate(t.n, t.elapsed+t.drained)
		fmt.Printf("%-9s (order insert + publish in the tx): %d tx in %s = %.0f tx/s; until consumed %s more = %.0f tx/s\n",
			l, t.n, t.elapsed.Round(time.Millisecond), v, t.drained.Round(time.Millisecond), consumed)
		result("publish-overhead", l, v, "tx/s", base)
		result("publish-overhead-consumed", l, consumed, "tx/s", base)
	}
	return nil
}

// burnDown stores N messages with each library stopped, starts it and
// times the consumer's receipt of them all.
func burnDown(ctx context.Context, cfg *config, w *world) error {
	start := time.Now()
	if err := w.rawSend(ctx, cfg.n); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	base := rate(int64(cfg.n), time.Since(start))
	fmt.Printf("baseline (raw RabbitMQ sends, asynchronous confirms): %.0f msg/s\n", base)
	for _, name := range cfg.libs {
		l, err := w.newLib(ctx, name)
		if err != nil {
			return err
		}
		st := time.Now()
		if err := l.store(ctx, cfg.n); err != nil {
			l.stop()
			return fmt.Errorf("%s: store: %w", name, err)
		}
		fmt.Printf("%s: stored %d in %s with its background stopped\n", name, cfg.n, time.Since(st).Round(time.Millisecond))
		st = time.Now()
		if err := l.start(ctx); err != nil {
			l.stop()
			return err
		}
		err = l.drain(ctx, 5*time.Minute)
		elapsed := time.Since(st)
		l.stop()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		v := rate(int64(cfg.n), elapsed)
		fmt.Printf("%s: %d consumed %s after start = %.0f msg/s\n", name, cfg.n, elapsed.Round(time.Millisecond), v)
		result("burn-down", name, v, "msg/s", base)
	}
	return nil
}

// endToEnd runs each library in turn: W producers for D, then the drain.
func endToEnd(ctx context.Context, cfg *config, w *world) error {
	for _, name := range cfg.libs {
		l, err := w.newLib(ctx, name)
		if err != nil {
			return err
		}
		if err := l.start(ctx); err != nil {
			l.stop()
			return err
		}
		if _, _, err := closedLoop(ctx, cfg.writers, time.Second, l.publishTx); err != nil { // warm-up
			l.stop()
			return err
		}
		c0, h0 := l.published(), l.handled()
		_, elapsed, err := closedLoop(ctx, cfg.writers, cfg.duration, l.publishTx)
		c1, h1 := l.published(), l.handled()
		if err == nil {
			err = l.drain(ctx, 2*time.Minute)
		}
		l.stop()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		committed, handled := rate(c1-c0, elapsed), rate(h1-h0, elapsed)
		fmt.Printf("%s: committed %.0f msg/s, handled %.0f msg/s, backlog at the end %d\n", name, committed, handled, c1-h1)
		result("end-to-end", name, handled, "msg/s", committed)
	}
	return nil
}
