// Command bench measures the bus against a baseline taken in the same run,
// on the same database and broker, and prints one machine-readable line:
//
//	RESULT scenario=<name> storage=<s> transport=<t> value=<n> unit=<u> baseline=<n> ratio=<value/baseline>
//
// Run it from the repository root:
//
//	go run ./bench SCENARIO [flags]
//
// Scenarios:
//
//	publish-overhead  W writers commit business transactions (one insert)
//	                  with PublishTx; baseline: the same transactions with a
//	                  plain insert of a same-size row instead. tx/s.
//	burn-down         N rows are stored with the bus stopped, then the bus
//	                  starts and sends them all; baseline: N raw sends to the
//	                  same broker with asynchronous confirms. msg/s.
//	end-to-end        W producers publish as fast as they can for D while one
//	                  group handles the messages; handled msg/s against the
//	                  producers' commit rate, the backlog, and the latency from
//	                  commit to handler start.
//	latency           a fixed rate for D; commit-to-handler p50/p95/p99 (p99
//	                  in the RESULT line) against the raw broker's
//	                  publish-to-receive latency at the same rate.
//	soak              a fixed rate for D (minutes); the live heap and the RSS
//	                  every -sample; RESULT compares the heap at the end with
//	                  the heap at the first sample.
//
// Servers are found through CAP_TEST_POSTGRES and CAP_TEST_RABBITMQ (the
// test suite's variables, with the same loopback defaults). Each run works in
// a schema, an exchange and queues of its own and removes them at the end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"time"

	"github.com/go-cap/cap/storage"
)

// Storages and transports the flags accept (files of their own add theirs
// from init: registerStorage, registerTransport), and those the library
// does not have yet.
var (
	storages        = []string{"postgres", "sqlite"}
	futureStorages  = []string{}
	transports      = []string{"memory"}
	futureTransport = []string{}
)

// serverFlags are the flags that locate a backend's server, added by the
// backends' files with addServerFlag; config.servers holds their values.
var serverFlags []serverFlag

type serverFlag struct{ name, env, def, usage string }

// addServerFlag adds the flag -name (default: $env, else def) from a
// backend file's init; its value is cfg.server(name).
func addServerFlag(name, env, def, usage string) {
	serverFlags = append(serverFlags, serverFlag{name, env, def, usage})
}

// scenarios in the order of the usage text.
var scenarios = []string{"publish-overhead", "burn-down", "end-to-end", "latency", "soak"}

// config is the parsed command line.
type config struct {
	scenario  string
	storage   string
	transport string
	n         int
	size      int
	writers   int
	duration  time.Duration
	rate      int
	sample    time.Duration
	mode      string // publish-overhead: intx, commit or stopped
	rounds    int    // publish-overhead: alternating rounds of both phases
	stats     bool
	profileDB bool
	handle    time.Duration // time each handler spends, simulated work

	// Bus tuning; zero keeps the library's defaults.
	batch, senders, consumers, workers int

	postgresURL string
	rabbitURL   string
	servers     map[string]*string // addServerFlag's flags
	cpuProfile  string
	memProfile  string
	traceFile   string
	verbose     bool
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.traceFile != "" {
		f, err := os.Create(cfg.traceFile)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer trace.Stop()
	}
	out := &report{w: stdout}
	res, err := dispatch(ctx, cfg, out)
	if cfg.memProfile != "" {
		if perr := writeHeapProfile(cfg.memProfile); perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	out.result(cfg, res)
	return 0
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.WriteHeapProfile(f)
}

func usage(fs *flag.FlagSet, w io.Writer) func() {
	return func() {
		fmt.Fprintf(w, "usage: go run ./bench SCENARIO [flags]\n\nscenarios: %s\n\nflags:\n",
			strings.Join(scenarios, ", "))
		fs.PrintDefaults()
	}
}

// parse reads the scenario and its flags and fills in the defaults that
// depend on the scenario.
func parse(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = usage(fs, stderr)
	fs.StringVar(&cfg.storage, "storage", "sqlite", "storage: "+strings.Join(storages, "|"))
	fs.StringVar(&cfg.transport, "transport", "memory", "transport: "+strings.Join(transports, "|"))
	fs.IntVar(&cfg.n, "n", 0, "messages (burn-down, default 20000) or transactions per phase (publish-overhead; 0: run for -duration)")
	fs.IntVar(&cfg.size, "size", 1024, "message body bytes")
	fs.IntVar(&cfg.writers, "writers", 0, "concurrent publishing goroutines (default 16 for publish-overhead, 8 otherwise)")
	fs.DurationVar(&cfg.duration, "duration", 0, "length of a phase (default 20s publish-overhead, split into -rounds, 10s end-to-end and latency, 2m soak)")
	fs.IntVar(&cfg.rate, "rate", 1000, "messages per second (latency, soak)")
	fs.DurationVar(&cfg.sample, "sample", 10*time.Second, "memory sampling period (soak)")
	fs.StringVar(&cfg.mode, "mode", "intx", "publish-overhead: intx (bus running, InTx hands the rows over), commit (bus running, plain commit: NOTIFY and claim) or stopped (bus not started: the transaction alone)")
	fs.IntVar(&cfg.rounds, "rounds", 4, "publish-overhead: rounds of both phases, alternating which goes first; -duration and -n are split between them")
	fs.BoolVar(&cfg.stats, "stats", false, "count the bus's storage calls and print them")
	fs.BoolVar(&cfg.profileDB, "profile-db", false, "PostgreSQL: print the statements that took the most time per message, from pg_stat_statements (it must be in shared_preload_libraries)")
	fs.DurationVar(&cfg.handle, "handle", 0, "time each handler spends (simulated work)")
	fs.IntVar(&cfg.batch, "batch", 0, "Options.BatchSize (0: library default)")
	fs.IntVar(&cfg.senders, "senders", 0, "Options.Senders (0: library default)")
	fs.IntVar(&cfg.consumers, "consumers", 0, "Options.ConsumerThreadCount (0: library default)")
	fs.IntVar(&cfg.workers, "workers", 0, "Options.Workers (0: library default)")
	fs.StringVar(&cfg.postgresURL, "postgres", env("CAP_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"), "PostgreSQL URL")
	fs.StringVar(&cfg.rabbitURL, "rabbitmq", env("CAP_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/"), "RabbitMQ URL")
	cfg.servers = map[string]*string{}
	for _, f := range serverFlags {
		cfg.servers[f.name] = fs.String(f.name, env(f.env, f.def), f.usage+" (or "+f.env+")")
	}
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	fs.StringVar(&cfg.memProfile, "memprofile", "", "write a heap profile at the end of the run to this file")
	fs.StringVar(&cfg.traceFile, "trace", "", "write an execution trace of the whole run to this file (go tool trace -pprof=net shows where goroutines wait on the network)")
	fs.BoolVar(&cfg.verbose, "v", false, "log the bus's info messages")

	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fs.Usage()
			return nil, flag.ErrHelp
		}
		fs.Usage()
		return nil, errors.New("missing scenario")
	}
	cfg.scenario = args[0]
	if !slices.Contains(scenarios, cfg.scenario) {
		return nil, fmt.Errorf("unknown scenario %q (scenarios: %s)", cfg.scenario, strings.Join(scenarios, ", "))
	}
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := checkChoice("storage", cfg.storage, storages, futureStorages); err != nil {
		return nil, err
	}
	if err := checkChoice("transport", cfg.transport, transports, futureTransport); err != nil {
		return nil, err
	}
	if cfg.writers == 0 {
		cfg.writers = 8
		if cfg.scenario == "publish-overhead" {
			cfg.writers = 16
		}
	}
	if cfg.duration == 0 {
		switch cfg.scenario {
		case "publish-overhead":
			cfg.duration = 20 * time.Second
		case "soak":
			cfg.duration = 2 * time.Minute
		default:
			cfg.duration = 10 * time.Second
		}
	}
	if cfg.n == 0 && cfg.scenario == "burn-down" {
		cfg.n = 20000
	}
	switch {
	case !slices.Contains([]string{"intx", "commit", "stopped"}, cfg.mode):
		return nil, fmt.Errorf("-mode %q: want intx, commit or stopped", cfg.mode)
	case cfg.rounds < 1:
		return nil, errors.New("-rounds must be at least 1")
	case cfg.writers < 1:
		return nil, errors.New("-writers must be at least 1")
	case cfg.size < 16:
		return nil, errors.New("-size must be at least 16 bytes")
	case cfg.rate < 1:
		return nil, errors.New("-rate must be at least 1")
	case cfg.n < 0:
		return nil, errors.New("-n must not be negative")
	case cfg.sample <= 0:
		return nil, errors.New("-sample must be positive")
	}
	return cfg, nil
}

func checkChoice(what, v string, have, future []string) error {
	if slices.Contains(have, v) {
		return nil
	}
	if slices.Contains(future, v) {
		return fmt.Errorf("%s %q is not implemented by the library yet; available: %s", what, v, strings.Join(have, ", "))
	}
	return fmt.Errorf("unknown %s %q; available: %s", what, v, strings.Join(have, ", "))
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// server returns the value of the flag addServerFlag added as name.
func (c *config) server(name string) string {
	if v, ok := c.servers[name]; ok {
		return *v
	}
	for _, f := range serverFlags {
		if f.name == name {
			return env(f.env, f.def)
		}
	}
	return ""
}

func (c *config) logger() *slog.Logger {
	level := slog.LevelWarn
	if c.verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// dispatch opens the storage and runs the scenario on it. The scenarios are
// generic over the storage's transaction type.
func dispatch(ctx context.Context, cfg *config, out *report) (result, error) {
	br, err := openBroker(ctx, cfg)
	if err != nil {
		return result{}, err
	}
	defer br.close()
	run, ok := storageKinds[cfg.storage]
	if !ok {
		return result{}, fmt.Errorf("unknown storage %q", cfg.storage)
	}
	return run(ctx, cfg, out, br)
}

// storageKind runs the scenario on a storage of one kind.
type storageKind func(ctx context.Context, cfg *config, out *report, br *broker) (result, error)

var storageKinds = map[string]storageKind{
	"postgres": storageRunner(openPostgres),
	"sqlite":   storageRunner(openSQLite),
}

// registerStorage makes -storage name available; called from the init
// function of the storage's file (database_<name>.go). open creates a
// database private to the run (removed by its close) with the business
// tables bench_orders (id, customer, total) and bench_plain (id, body).
func registerStorage[TTx any](name string, open func(ctx context.Context, cfg *config) (*database[TTx], error)) {
	storageKinds[name] = storageRunner(open)
	if !slices.Contains(storages, name) {
		storages = append(storages, name)
		slices.Sort(storages)
	}
}

func storageRunner[TTx any](open func(ctx context.Context, cfg *config) (*database[TTx], error)) storageKind {
	return func(ctx context.Context, cfg *config, out *report, br *broker) (result, error) {
		db, err := open(ctx, cfg)
		if err != nil {
			return result{}, err
		}
		defer db.close()
		return runScenario(ctx, cfg, out, db, br)
	}
}

func runScenario[TTx any](ctx context.Context, cfg *config, out *report, db *database[TTx], br *broker) (result, error) {
	out.linef("%s storage=%s transport=%s size=%d GOMAXPROCS=%d", cfg.scenario, cfg.storage, cfg.transport,
		cfg.size, runtime.GOMAXPROCS(0))
	if cfg.stats {
		db.stats = newStatStore(db.store)
		br.stats = &statTransport{}
		defer func() {
			out.linef("storage and transport calls of the bus:\n%s\n%s", db.stats.summary(), br.stats.summary())
		}()
	}
	if cfg.profileDB {
		report, err := startProfileDB(ctx, db.pg)
		if err != nil {
			return result{}, err
		}
		defer func() {
			n, _ := db.succeeded(context.WithoutCancel(ctx), storage.Published)
			report(context.WithoutCancel(ctx), out, n)
		}()
	}
	switch cfg.scenario {
	case "publish-overhead":
		return publishOverhead(ctx, cfg, out, db, br)
	case "burn-down":
		return burnDown(ctx, cfg, out, db, br)
	case "end-to-end":
		return endToEnd(ctx, cfg, out, db, br)
	case "latency":
		return latency(ctx, cfg, out, db, br)
	default:
		return soak(ctx, cfg, out, db, br)
	}
}
