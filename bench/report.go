package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"time"
)

// result is what a scenario measured: the library's figure and the
// baseline's, in one unit.
type result struct {
	value    float64
	baseline float64
	unit     string
}

// report writes the human-readable lines of a run and its RESULT line.
type report struct {
	w io.Writer
}

func (r *report) linef(format string, args ...any) {
	fmt.Fprintf(r.w, format+"\n", args...)
}

// result writes the machine-readable last line.
func (r *report) result(cfg *config, res result) {
	ratio := math.NaN()
	if res.baseline != 0 {
		ratio = res.value / res.baseline
	}
	fmt.Fprintf(r.w, "RESULT scenario=%s storage=%s transport=%s value=%s unit=%s baseline=%s ratio=%s\n",
		cfg.scenario, cfg.storage, cfg.transport, num(res.value), res.unit, num(res.baseline),
		strconv.FormatFloat(ratio, 'f', 3, 64))
}

// num formats a figure with three significant digits at most, and no
// fraction for large ones.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return strconv.FormatFloat(v, 'f', -1, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

// rate is n per second over d.
func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string { return num(float64(d)/float64(time.Millisecond)) + "ms" }

// mb formats bytes in MiB.
func mb(b uint64) string { return num(float64(b)/(1<<20)) + "MiB" }
