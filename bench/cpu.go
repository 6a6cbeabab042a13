package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// cpuUse is the processor time the processes of this machine spent, by
// program: this one ("bench"), the databases ("postgres", "mariadb"), the
// brokers ("rabbitmq", "kafka" for the bench's kfake, "nats", "redis") and
// everything else ("other"). It tells what a phase cost
// beyond its wall time, and who else was busy. It is read from /proc, so it
// is empty elsewhere and misses processes that ended during the phase.
type cpuUse map[string]time.Duration

// clockTick is the unit of /proc's times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

func readCPU() cpuUse {
	use := cpuUse{}
	self := os.Getpid()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(dir + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime(14) stime(15); comm may hold spaces.
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		comm := s[open+1 : closing]
		f := strings.Fields(s[closing+1:])
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		use[program(pid, self, comm)] += time.Duration(utime+stime) * clockTick
	}
	return use
}

func program(pid, self int, comm string) string {
	switch {
	case pid == self:
		return "bench"
	case comm == "postgres" || strings.HasPrefix(comm, "postgres"):
		return "postgres"
	case comm == "beam.smp" || strings.HasPrefix(comm, "erl_") || comm == "epmd" || comm == "inet_gethost":
		return "rabbitmq"
	case comm == "mariadbd" || comm == "mysqld":
		return "mariadb"
	case comm == "kfake" || comm == "capbench-kfake":
		return "kafka"
	case comm == "nats-server":
		return "nats"
	case comm == "redis-server":
		return "redis"
	default:
		return "other"
	}
}

// since returns what was spent after before.
func (u cpuUse) since(before cpuUse) cpuUse {
	d := cpuUse{}
	for k, v := range u {
		if x := v - before[k]; x > 0 {
			d[k] = x
		}
	}
	return d
}

// format reports each program's time as a share of the machine's cores
// over wall.
func (u cpuUse) format(wall time.Duration) string {
	if len(u) == 0 || wall <= 0 {
		return "cpu: not available"
	}
	var b strings.Builder
	var total time.Duration
	b.WriteString("cpu (cores busy):")
	for _, k := range u.programs() {
		total += u[k]
		fmt.Fprintf(&b, " %s %.2f", k, u[k].Seconds()/wall.Seconds())
	}
	fmt.Fprintf(&b, ", total %.2f of %d", total.Seconds()/wall.Seconds(), numCPU())
	return b.String()
}

// programOrder is the order in which programs are reported.
var programOrder = []string{"bench", "postgres", "mariadb", "rabbitmq", "kafka", "nats", "redis", "other"}

// programs returns the programs to report: bench, postgres and other
// always, the others when they spent anything.
func (u cpuUse) programs() []string {
	var ps []string
	for _, k := range programOrder {
		if u[k] > 0 || k == "bench" || k == "postgres" || k == "other" {
			ps = append(ps, k)
		}
	}
	return ps
}

// perMessage reports each program's processor time per message (or
// transaction) for n of them, in microseconds: what a phase cost, which a
// noisy machine changes less than a rate. "other" is left out of the total:
// it is what the machine did besides.
func (u cpuUse) perMessage(n int64, what string) string {
	if len(u) == 0 || n <= 0 {
		return "cpu per " + what + ": not available"
	}
	var b strings.Builder
	var total time.Duration
	fmt.Fprintf(&b, "cpu per %s (µs):", what)
	for _, k := range u.programs() {
		per := float64(u[k].Microseconds()) / float64(n)
		fmt.Fprintf(&b, " %s %.0f", k, per)
		if k != "other" {
			total += u[k]
		}
	}
	fmt.Fprintf(&b, ", total %.0f (without other)", float64(total.Microseconds())/float64(n))
	return b.String()
}

func numCPU() int { return runtime.NumCPU() }

// add returns the sum of u and v.
func (u cpuUse) add(v cpuUse) cpuUse {
	s := cpuUse{}
	for k, x := range u {
		s[k] += x
	}
	for k, x := range v {
		s[k] += x
	}
	return s
}
