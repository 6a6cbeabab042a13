package cap

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/go-cap/cap/storage"
)

// Node returns this bus instance as its heartbeat records it. Its ID is
// unique to the instance: Options.InstanceID and a number of its own, so
// that two processes on one host differ. Started is zero before Start.
func (b *Bus[TTx]) Node() storage.Node {
	n := b.node
	if ns := b.started.Load(); ns != 0 {
		n.Started = time.Unix(0, ns).UTC()
	}
	n.LastSeen = time.Now().UTC()
	return n
}

// Nodes returns the bus instances running on the storage's database: those
// whose heartbeat the storage saw within three of this bus's
// HeartbeatInterval, by ID. On a storage that keeps no heartbeat (one that
// is not a storage.NodeRegistry), with the heartbeat disabled, or when the
// bus is not running, it returns this instance alone.
func (b *Bus[TTx]) Nodes(ctx context.Context) ([]storage.Node, error) {
	reg, ok := b.store.(storage.NodeRegistry)
	if !ok || b.opts.HeartbeatInterval < 0 || !b.running.Load() {
		return []storage.Node{b.Node()}, nil
	}
	ns, err := reg.Nodes(ctx, 3*b.opts.HeartbeatInterval)
	if err != nil {
		return nil, fmt.Errorf("cap: nodes: %w", err)
	}
	return ns, nil
}

// startHeartbeat records the node at once and then every
// HeartbeatInterval until runCtx ends. A failed heartbeat is logged when
// it starts failing and when it recovers. Called by Start, after it set
// b.started.
func (b *Bus[TTx]) startHeartbeat(ctx, runCtx context.Context) {
	reg, ok := b.store.(storage.NodeRegistry)
	if !ok || b.opts.HeartbeatInterval < 0 {
		return
	}
	node := b.Node()
	failing := false
	beat := func(ctx context.Context) {
		err := reg.Heartbeat(ctx, node)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			b.opts.Logger.WarnContext(ctx, "cap: heartbeat failed", "node", node.ID, "error", err)
			failing = true
		case err == nil && failing:
			b.opts.Logger.InfoContext(ctx, "cap: heartbeat recorded again", "node", node.ID)
			failing = false
		}
	}
	beat(ctx)
	b.bg.Add(1)
	go func() {
		defer b.bg.Done()
		t := time.NewTicker(b.opts.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				beat(runCtx)
			}
		}
	}()
}

// removeNode forgets this instance in the storage's heartbeat, as it shuts
// down.
func (b *Bus[TTx]) removeNode(ctx context.Context) {
	reg, ok := b.store.(storage.NodeRegistry)
	if !ok || b.opts.HeartbeatInterval < 0 {
		return
	}
	if err := reg.RemoveNode(ctx, b.node.ID); err != nil {
		b.opts.Logger.WarnContext(ctx, "cap: removing the node's heartbeat failed", "node", b.node.ID, "error", err)
	}
}

// newNode describes the instance for its heartbeat.
func newNode(instanceID string, n int64) storage.Node {
	host, _ := os.Hostname()
	return storage.Node{ID: fmt.Sprintf("%s/%d", instanceID, n), Name: instanceID, Host: host, Version: Version()}
}

// Version returns the library's module version as the running program was
// built with it ("devel" when it is built from a work tree).
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	const path = "github.com/go-cap/cap"
	if bi.Main.Path == path && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == path {
			if d.Replace != nil && d.Replace.Version != "" {
				return d.Replace.Version
			}
			if d.Version != "" && d.Version != "(devel)" {
				return d.Version
			}
		}
	}
	return "devel"
}
