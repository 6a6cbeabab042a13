package message

import (
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// Epoch is CAP's snowflake epoch (the Twitter epoch), in Unix milliseconds.
const Epoch int64 = 1288834974657

// MaxWorkerID is the largest worker id a generator accepts.
const MaxWorkerID = 1023

// ErrWorkerID reports a worker id outside 0..MaxWorkerID.
var ErrWorkerID = errors.New("message: worker id out of range")

// IDGenerator makes message ids with CAP's layout: worker id in the top 10
// bits, then a 53-bit counter that starts at (now - Epoch) << 12 and grows by
// one per id, so consecutive ids of one generator differ by exactly one. It
// is safe for concurrent use.
type IDGenerator struct {
	mu      sync.Mutex
	worker  int64
	counter int64
	now     func() time.Time
}

// NewIDGenerator returns a generator for worker id w (0..MaxWorkerID).
func NewIDGenerator(w int64) (*IDGenerator, error) {
	if w < 0 || w > MaxWorkerID {
		return nil, fmt.Errorf("%w: %d", ErrWorkerID, w)
	}
	g := &IDGenerator{worker: w, now: time.Now}
	g.counter = g.stamp() << 12
	return g, nil
}

func (g *IDGenerator) stamp() int64 { return g.now().UnixMilli() - Epoch }

// Next returns a new id.
func (g *IDGenerator) Next() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.counter++
	// The sequence may run ahead of the clock under a burst; wait for it, as
	// CAP does, so ids stay time-ordered across restarts.
	for g.counter>>12 > g.stamp() {
		g.mu.Unlock()
		time.Sleep(time.Millisecond)
		g.mu.Lock()
	}
	return g.worker<<53 | (g.counter & (1<<53 - 1))
}

// NextString returns Next as a decimal string, the form of cap-msg-id.
func (g *IDGenerator) NextString() string { return strconv.FormatInt(g.Next(), 10) }

// WorkerID returns the worker id of g.
func (g *IDGenerator) WorkerID() int64 { return g.worker }

// WorkerIDFromEnv returns the worker id from CAP_WORKERID when set, else one
// derived from the host's first hardware address (CAP's rule), else from the
// host name, else a random one.
func WorkerIDFromEnv() (int64, error) {
	if s, ok := os.LookupEnv("CAP_WORKERID"); ok {
		w, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: CAP_WORKERID=%q", ErrWorkerID, s)
		}
		if w < 0 || w > MaxWorkerID {
			return 0, fmt.Errorf("%w: CAP_WORKERID=%d", ErrWorkerID, w)
		}
		return w, nil
	}
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 || len(i.HardwareAddr) < 6 {
				continue
			}
			mac := i.HardwareAddr
			return int64(mac[4]&3)<<8 | int64(mac[5]), nil
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		f := fnv.New32a()
		_, _ = f.Write([]byte(h))
		return int64(f.Sum32() & MaxWorkerID), nil
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	return int64(b[0]&3)<<8 | int64(b[1]), nil
}
