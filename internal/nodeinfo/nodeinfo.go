// Package nodeinfo encodes a bus instance's heartbeat as a row of CAP's Lock
// table (Key, Instance, LastLockTime), which the SQL storages share with the
// bus's leases: the key is KeyPrefix and the node's ID, Instance holds the
// node's name, host, version and start time, and LastLockTime is when the
// node was last seen.
package nodeinfo

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-cap/cap/storage"
)

// KeyPrefix starts the Lock table key of every node row. It has no LIKE
// wildcard, so `Key LIKE KeyPrefix || '%'` finds exactly the node rows.
const KeyPrefix = "cap.node:"

// Pattern is the LIKE pattern of the node rows' keys.
const Pattern = KeyPrefix + "%"

// Lock table column sizes: Key VARCHAR(128), Instance VARCHAR(256).
const (
	maxKey      = 128
	maxInstance = 256
)

// Retention is how long a node row that no heartbeat renewed is kept: an
// instance that stopped without removing its row disappears from the
// table after it.
const Retention = 24 * time.Hour

const sep = "\x1f" // ASCII unit separator: not in names or host names

// Key is the Lock table key of node id, cut to the column's size.
func Key(id string) string { return clip(KeyPrefix+id, maxKey) }

// Instance encodes n's name, host, version and start time, cut to fit
// the Instance column (the name and host lose their ends first).
func Instance(n storage.Node) string {
	started := strconv.FormatInt(n.Started.UnixMicro(), 10)
	room := maxInstance - len(started) - 3*len(sep)
	version := clip(n.Version, 40)
	room -= len(version)
	name := clip(n.Name, room/2)
	host := clip(n.Host, room-len(name))
	return name + sep + host + sep + version + sep + started
}

// Decode turns a node row back into a Node; ok is false for a row that is
// not a node's.
func Decode(key, instance string, lastSeen time.Time) (n storage.Node, ok bool) {
	id, found := strings.CutPrefix(key, KeyPrefix)
	if !found {
		return storage.Node{}, false
	}
	parts := strings.Split(instance, sep)
	if len(parts) != 4 {
		return storage.Node{}, false
	}
	us, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil {
		return storage.Node{}, false
	}
	return storage.Node{ID: id, Name: parts[0], Host: parts[1], Version: parts[2],
		Started: time.UnixMicro(us).UTC(), LastSeen: lastSeen.UTC()}, true
}

// clip cuts s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Rows is what Scan reads node rows from: *sql.Rows, or pgx's rows.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// Scan reads rows of (Key, Instance, LastLockTime) into Nodes, leaving out
// the rows that are not a node's.
func Scan(rs Rows) ([]storage.Node, error) {
	var out []storage.Node
	for rs.Next() {
		var key, inst string
		var seen time.Time
		if err := rs.Scan(&key, &inst, &seen); err != nil {
			return nil, err
		}
		if n, ok := Decode(key, inst, seen); ok {
			out = append(out, n)
		}
	}
	return out, rs.Err()
}
