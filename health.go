package cap

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/transport"
)

// Health is a bus's state, for readiness and liveness probes.
type Health struct {
	// Healthy: the bus runs, its storage and broker are reachable and
	// every group has all its consumers.
	Healthy bool `json:"healthy"`
	// Running: started and not shut down (what a liveness probe asks).
	Running   bool             `json:"running"`
	Storage   ComponentHealth  `json:"storage"`
	Transport ComponentHealth  `json:"transport"`
	Groups    []ConsumerHealth `json:"groups"`
}

// ComponentHealth is the state of the storage or the transport.
type ComponentHealth struct {
	Name    string `json:"name,omitempty"`
	Healthy bool   `json:"healthy"`
	Error   string `json:"error,omitempty"`
}

// ConsumerHealth is the state of one group's broker consumers.
type ConsumerHealth struct {
	Group   string `json:"group"`
	Wanted  int    `json:"wanted"`  // Options.ConsumerThreadCount
	Running int    `json:"running"` // consumers open on the broker
	Healthy bool   `json:"healthy"`
	// Error is the last receive error, when one happened since the last
	// delivery.
	Error string `json:"error,omitempty"`
}

// Health checks the bus: the storage answers (storage.Pinger, else a
// transaction begun and rolled back), the transport is connected
// (transport.Checker, where the transport has it) and each subscribed group
// has its broker consumers running. Each check is bounded by ctx.
func (b *Bus[TTx]) Health(ctx context.Context) Health {
	running := b.running.Load()
	h := Health{Running: running, Storage: ComponentHealth{Name: nameOf(b.store)},
		Transport: ComponentHealth{Name: nameOf(b.tr)}}
	if err := b.pingStorage(ctx); err != nil {
		h.Storage.Error = err.Error()
	} else {
		h.Storage.Healthy = true
	}
	if c, ok := b.tr.(transport.Checker); ok {
		if err := c.Check(ctx); err != nil {
			h.Transport.Error = err.Error()
		} else {
			h.Transport.Healthy = true
		}
	} else {
		h.Transport.Healthy = true // nothing to check
	}
	healthy := running && h.Storage.Healthy && h.Transport.Healthy
	if running {
		for _, g := range b.consumers.Status() {
			ch := ConsumerHealth{Group: g.Group, Wanted: g.Wanted, Running: g.Running}
			ch.Healthy = g.Running == g.Wanted
			if g.Err != nil {
				ch.Error = g.Err.Error()
			}
			healthy = healthy && ch.Healthy
			h.Groups = append(h.Groups, ch)
		}
	}
	h.Healthy = healthy
	return h
}

func (b *Bus[TTx]) pingStorage(ctx context.Context) error {
	if p, ok := b.store.(storage.Pinger); ok {
		return p.Ping(ctx)
	}
	tx, err := b.store.Begin(ctx)
	if err != nil {
		return err
	}
	return b.store.Rollback(ctx, tx)
}

func nameOf(v any) string {
	switch n := v.(type) {
	case storage.Namer:
		return n.Name()
	case transport.Namer:
		return n.Name()
	}
	return fmt.Sprintf("%T", v)
}

// HealthHandler returns an http.Handler for probes. It answers GET and
// HEAD with Health as JSON: status 200 when healthy, 503 when not (a
// readiness probe). With the query parameter "live" it answers 200 as long
// as the bus runs, whatever its storage and broker do (a liveness probe: a
// database outage should not restart the process). Each request's checks
// are bounded by timeout (5 s when zero).
func (b *Bus[TTx]) HealthHandler(timeout time.Duration) http.Handler {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		h := b.Health(ctx)
		ok := h.Healthy
		if r.URL.Query().Has("live") {
			ok = h.Running
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(h)
	})
}
