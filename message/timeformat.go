package message

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// SentTimeLayout is CAP's invariant-culture format for cap-senttime
// (.NET DateTime.ToString(CultureInfo.InvariantCulture)).
const SentTimeLayout = "01/02/2006 15:04:05"

// ErrInvalidTime reports a time or duration header that cannot be parsed.
var ErrInvalidTime = errors.New("message: invalid time")

// FormatSentTime formats t for cap-senttime: UTC, MM/dd/yyyy HH:mm:ss.
func FormatSentTime(t time.Time) string { return t.UTC().Format(SentTimeLayout) }

// sentTimeLayouts are the forms CAP has written over its versions: the
// invariant culture (8.3 and later), culture-specific DateTime and
// DateTimeOffset strings (up to 8.2), and ISO 8601.
var sentTimeLayouts = []string{
	SentTimeLayout,
	"1/2/2006 15:04:05",
	"1/2/2006 3:04:05 PM",
	"1/2/2006 3:04:05 PM -07:00",
	"1/2/2006 15:04:05 -07:00",
	"2006/1/2 15:04:05",
	"2006/1/2 15:04:05 -07:00",
	"2006/1/2 3:04:05 PM",
	"2006-1-2 15:04:05",
	"2006-1-2 15:04:05 -07:00",
	"2.1.2006 15:04:05",
	"2.1.2006 15:04:05 -07:00",
	"2/1/2006 15:04:05",
	"2/1/2006 15:04:05 -07:00",
	"2006-01-02T15:04:05.9999999Z07:00",
	"2006-01-02T15:04:05.9999999",
	time.RFC1123Z,
	time.RFC1123,
}

// ParseSentTime parses every cap-senttime format CAP has written. A value
// without an offset is taken as UTC. Ambiguous day/month orders are read
// month first (the invariant and en-US cultures) and fall back to day first.
func ParseSentTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, fmt.Errorf("%w: empty sent time", ErrInvalidTime)
	}
	// Chinese and other cultures write 上午/下午 or lower-case am/pm; keep to
	// the forms Go can parse after normalising the meridiem.
	norm := strings.NewReplacer(" am", " AM", " pm", " PM", "a.m.", "AM", "p.m.", "PM").Replace(s)
	for _, layout := range sentTimeLayouts {
		if t, err := time.Parse(layout, norm); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: unknown sent time format %q", ErrInvalidTime, s)
}

// FormatDelay formats d in .NET TimeSpan "c" format: [-][d.]hh:mm:ss[.fffffff].
func FormatDelay(d time.Duration) string {
	var b strings.Builder
	if d < 0 {
		b.WriteByte('-')
		d = -d
	}
	ticks := int64(d / 100) // .NET ticks are 100 ns
	const tps = 10_000_000
	days := ticks / (86400 * tps)
	ticks -= days * 86400 * tps
	h := ticks / (3600 * tps)
	ticks -= h * 3600 * tps
	m := ticks / (60 * tps)
	ticks -= m * 60 * tps
	sec := ticks / tps
	frac := ticks - sec*tps
	if days > 0 {
		fmt.Fprintf(&b, "%d.", days)
	}
	fmt.Fprintf(&b, "%02d:%02d:%02d", h, m, sec)
	if frac > 0 {
		fmt.Fprintf(&b, ".%07d", frac)
	}
	return b.String()
}

// ParseDelay parses a .NET TimeSpan in "c" format, as in cap-delaytime.
func ParseDelay(s string) (time.Duration, error) {
	orig := s
	bad := func() (time.Duration, error) {
		return 0, fmt.Errorf("%w: invalid delay %q", ErrInvalidTime, orig)
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var days int64
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return bad()
	}
	if i := strings.IndexByte(parts[0], '.'); i >= 0 {
		d, err := strconv.ParseInt(parts[0][:i], 10, 64)
		if err != nil || d < 0 {
			return bad()
		}
		days = d
		parts[0] = parts[0][i+1:]
	}
	h, err1 := strconv.ParseInt(parts[0], 10, 64)
	m, err2 := strconv.ParseInt(parts[1], 10, 64)
	secPart, fracPart, hasFrac := strings.Cut(parts[2], ".")
	sec, err3 := strconv.ParseInt(secPart, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || h < 0 || h > 23 || m < 0 || m > 59 || sec < 0 || sec > 59 {
		return bad()
	}
	var frac int64
	if hasFrac {
		if fracPart == "" || len(fracPart) > 7 {
			return bad()
		}
		f, err := strconv.ParseInt(fracPart+strings.Repeat("0", 7-len(fracPart)), 10, 64)
		if err != nil || f < 0 {
			return bad()
		}
		frac = f
	}
	secs := days*86400 + h*3600 + m*60 + sec // days is bounded below, so no overflow
	if days > 106751 || secs > (math.MaxInt64-frac*100)/int64(time.Second) {
		return bad() // beyond time.Duration's range
	}
	d := time.Duration(secs)*time.Second + time.Duration(frac)*100
	if neg {
		d = -d
	}
	return d, nil
}
