// Package dashboard serves CAP's dashboard for a bus: the JSON API of
// DotNetCore.CAP's dashboard (same paths, parameters and camelCase fields)
// under {prefix}/api, and a web UI embedded in the binary (no CDN, it works
// offline) to see, search, requeue, re-execute and delete messages.
//
//	h, err := dashboard.New(bus, dashboard.Options{
//		PathBase:  "/cap",
//		Authorize: func(r *http.Request) bool { return isAdmin(r) },
//	})
//	mux.Handle("/cap/", h)
//
// New refuses to build a handler without Authorize unless AllowAnonymous
// is set. POST requests must come from the dashboard's own origin.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/storage"
)

//go:embed web
var webFS embed.FS

// ErrNoAuthorization: New was given neither Authorize nor AllowAnonymous.
var ErrNoAuthorization = errors.New("dashboard: Options.Authorize is required unless AllowAnonymous is set")

// Limits on the input the API accepts.
const (
	MaxPageSize = 200  // largest perPage
	MaxIDs      = 1000 // most ids in one requeue, re-execute or delete
	maxBody     = 64 << 10
)

// Options configure the dashboard.
type Options struct {
	// PathBase is the path the handler is mounted at ("/cap"); requests
	// are expected with it. Empty: the handler serves from "/" (mount it
	// with http.StripPrefix).
	PathBase string
	// Authorize decides whether a request may use the dashboard (health
	// excepted). Required unless AllowAnonymous.
	Authorize func(*http.Request) bool
	// AllowAnonymous serves every request without Authorize.
	AllowAnonymous bool
	// ReadOnly hides the requeue, re-execute and delete actions and
	// refuses their requests (403).
	ReadOnly bool
	// PollingInterval is how often the UI refreshes, 2 s when zero.
	PollingInterval time.Duration
	// HistoryCacheFor is how long /metrics-history is cached, a minute when
	// zero.
	HistoryCacheFor time.Duration
}

type handler[TTx any] struct {
	bus  *cap.Bus[TTx]
	opts Options
	mux  *http.ServeMux
	rt   *realtime
	hist historyCache
}

// New returns the dashboard of bus as an http.Handler.
func New[TTx any](bus *cap.Bus[TTx], opts Options) (http.Handler, error) {
	if bus == nil {
		return nil, errors.New("dashboard: a bus is required")
	}
	if opts.Authorize == nil && !opts.AllowAnonymous {
		return nil, ErrNoAuthorization
	}
	opts.PathBase = strings.TrimRight(opts.PathBase, "/")
	if opts.PathBase != "" && !strings.HasPrefix(opts.PathBase, "/") {
		return nil, fmt.Errorf("dashboard: PathBase %q must start with /", opts.PathBase)
	}
	if opts.PollingInterval <= 0 {
		opts.PollingInterval = 2 * time.Second
	}
	if opts.HistoryCacheFor <= 0 {
		opts.HistoryCacheFor = time.Minute
	}
	h := &handler[TTx]{bus: bus, opts: opts, mux: http.NewServeMux(), rt: newRealtime()}
	h.rt.sample(statsOf(bus.Stats()))
	m := h.mux
	m.HandleFunc("GET /api/health", h.health)
	m.HandleFunc("GET /api/meta", h.auth(h.meta))
	m.HandleFunc("GET /api/stats", h.auth(h.stats))
	m.HandleFunc("GET /api/metrics-realtime", h.auth(h.realtime))
	m.HandleFunc("GET /api/metrics-history", h.auth(h.history))
	m.HandleFunc("GET /api/published/message/{id}", h.auth(h.message(storage.Published)))
	m.HandleFunc("GET /api/received/message/{id}", h.auth(h.message(storage.Received)))
	m.HandleFunc("GET /api/published/{status}", h.auth(h.list(storage.Published)))
	m.HandleFunc("GET /api/received/{status}", h.auth(h.list(storage.Received)))
	m.HandleFunc("POST /api/published/requeue", h.auth(h.write(h.redrive(storage.Published))))
	m.HandleFunc("POST /api/received/reexecute", h.auth(h.write(h.redrive(storage.Received))))
	m.HandleFunc("POST /api/published/delete", h.auth(h.write(h.delete(storage.Published))))
	m.HandleFunc("POST /api/received/delete", h.auth(h.write(h.delete(storage.Received))))
	m.HandleFunc("GET /api/subscriber", h.auth(h.subscribers))
	m.HandleFunc("GET /api/nodes", h.auth(h.nodes))
	m.HandleFunc("/api/", h.auth(func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "no such API route")
	}))
	m.HandleFunc("GET /{$}", h.auth(h.index))
	m.HandleFunc("GET /index.html", h.auth(h.index))
	static, _ := fs.Sub(webFS, "web")
	files := http.FileServer(http.FS(static))
	m.Handle("GET /static/", h.auth(func(w http.ResponseWriter, r *http.Request) {
		r2 := *r
		u := *r.URL
		u.Path = strings.TrimPrefix(r.URL.Path, "/static")
		r2.URL = &u
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, &r2)
	}))
	return h, nil
}

// ServeHTTP serves the dashboard.
func (h *handler[TTx]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.opts.PathBase != "" {
		p := r.URL.Path
		if p == h.opts.PathBase {
			http.Redirect(w, r, h.opts.PathBase+"/", http.StatusMovedPermanently)
			return
		}
		rest, ok := strings.CutPrefix(p, h.opts.PathBase+"/")
		if !ok {
			writeErr(w, http.StatusNotFound, "not under "+h.opts.PathBase)
			return
		}
		r2 := *r
		u := *r.URL
		u.Path = "/" + rest
		u.RawPath = ""
		r2.URL = &u
		r = &r2
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	h.mux.ServeHTTP(w, r)
}

func (h *handler[TTx]) auth(f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !h.opts.AllowAnonymous && !h.opts.Authorize(r) {
			writeErr(w, http.StatusUnauthorized, "not authorized")
			return
		}
		f(w, r)
	}
}

// write guards the state-changing routes: refused when read-only, and
// only from the dashboard's own origin.
func (h *handler[TTx]) write(f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h.opts.ReadOnly {
			writeErr(w, http.StatusForbidden, "the dashboard is read-only")
			return
		}
		if !sameOrigin(r) {
			writeErr(w, http.StatusForbidden, "cross-site request refused")
			return
		}
		f(w, r)
	}
}

// sameOrigin accepts a request a browser marks same-origin, or whose
// Origin is the request's host. A request with neither header (not from a
// browser: curl, a script) is accepted; browsers send at least one on a
// POST.
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" {
		return s == "same-origin" || s == "none"
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

type apiError struct {
	Error string `json:"error"`
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (h *handler[TTx]) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	hl := h.bus.Health(ctx)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !hl.Healthy {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "Unhealthy")
		return
	}
	_, _ = io.WriteString(w, "OK")
}

type nameVersion struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
}

type metaResp struct {
	Cap      nameVersion `json:"cap"`
	Broker   nameVersion `json:"broker"`
	Storage  nameVersion `json:"storage"`
	ReadOnly bool        `json:"readOnly"`
	Polling  int64       `json:"pollingInterval"`
}

func (h *handler[TTx]) meta(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	hl := h.bus.Health(ctx)
	writeJSON(w, http.StatusOK, metaResp{
		Cap:      nameVersion{Name: "CAP for Go", Version: cap.Version()},
		Broker:   nameVersion{Name: hl.Transport.Name},
		Storage:  nameVersion{Name: hl.Storage.Name},
		ReadOnly: h.opts.ReadOnly, Polling: h.opts.PollingInterval.Milliseconds(),
	})
}

type statsResp struct {
	Servers            int   `json:"servers"`
	Subscribers        int   `json:"subscribers"`
	PublishedSucceeded int64 `json:"publishedSucceeded"`
	PublishedDelayed   int64 `json:"publishedDelayed"`
	PublishedFailed    int64 `json:"publishedFailed"`
	PublishedScheduled int64 `json:"publishedScheduled"`
	ReceivedSucceeded  int64 `json:"receivedSucceeded"`
	ReceivedFailed     int64 `json:"receivedFailed"`
	ReceivedScheduled  int64 `json:"receivedScheduled"`
}

func (h *handler[TTx]) stats(w http.ResponseWriter, r *http.Request) {
	st := h.bus.Storage()
	pc, err := st.Counts(r.Context(), storage.Published)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	rc, err := st.Counts(r.Context(), storage.Received)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	subs := 0
	for _, ts := range h.bus.Groups() {
		subs += len(ts)
	}
	writeJSON(w, http.StatusOK, statsResp{
		Servers: 1, Subscribers: subs,
		PublishedSucceeded: pc[storage.StatusSucceeded], PublishedDelayed: pc[storage.StatusDelayed],
		PublishedFailed: pc[storage.StatusFailed], PublishedScheduled: pc[storage.StatusScheduled],
		ReceivedSucceeded: rc[storage.StatusSucceeded], ReceivedFailed: rc[storage.StatusFailed],
		ReceivedScheduled: rc[storage.StatusScheduled],
	})
}

// statuses are the list routes' {status}, compared case-insensitively;
// "all" lists every status.
var statuses = map[string]storage.Status{
	"succeeded": storage.StatusSucceeded, "failed": storage.StatusFailed, "delayed": storage.StatusDelayed,
	"scheduled": storage.StatusScheduled, "queued": storage.StatusQueued, "all": "",
}

type item struct {
	ID         string     `json:"id"`
	Version    string     `json:"version"`
	Group      string     `json:"group"`
	Name       string     `json:"name"`
	Content    string     `json:"content"`
	Added      time.Time  `json:"added"`
	ExpiresAt  *time.Time `json:"expiresAt"`
	Retries    int        `json:"retries"`
	StatusName string     `json:"statusName"`
}

type listResp struct {
	Items     []item `json:"items"`
	Totals    int64  `json:"totals"`
	PageIndex int    `json:"pageIndex"`
	PageSize  int    `json:"pageSize"`
}

func intParam(q url.Values, key string, def, lo, hi int) (int, error) {
	s := q.Get(key)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s must be an integer from %d to %d", key, lo, hi)
	}
	return n, nil
}

func (h *handler[TTx]) list(t storage.Table) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		status, ok := statuses[strings.ToLower(r.PathValue("status"))]
		if !ok {
			writeErr(w, http.StatusBadRequest, "unknown status "+strconv.Quote(r.PathValue("status")))
			return
		}
		q := r.URL.Query()
		per, err := intParam(q, "perPage", 20, 1, MaxPageSize)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		page, err := intParam(q, "currentPage", 1, 1, 1<<20)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		lq := storage.ListQuery{Status: status, Name: q.Get("name"), Content: q.Get("content"),
			Offset: (page - 1) * per, Limit: per}
		if t == storage.Received {
			lq.Group = q.Get("group")
		}
		for _, s := range []string{lq.Name, lq.Content, lq.Group} {
			if len(s) > 200 {
				writeErr(w, http.StatusBadRequest, "a filter is longer than 200 bytes")
				return
			}
		}
		recs, total, err := h.bus.Storage().List(r.Context(), t, lq)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
		out := listResp{Items: make([]item, 0, len(recs)), Totals: total, PageIndex: page, PageSize: per}
		for _, rec := range recs {
			out.Items = append(out.Items, item{ID: strconv.FormatInt(rec.ID, 10), Version: rec.Version,
				Group: rec.Group, Name: rec.Name, Content: string(rec.Content), Added: rec.Added,
				ExpiresAt: rec.ExpiresAt, Retries: rec.Retries, StatusName: string(rec.Status)})
		}
		writeJSON(w, http.StatusOK, out)
	}
}

func (h *handler[TTx]) message(t storage.Table) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil || id <= 0 {
			writeErr(w, http.StatusBadRequest, "id must be a positive integer")
			return
		}
		rec, err := h.bus.Storage().Get(r.Context(), t, id)
		if errors.Is(err, storage.ErrNotFound) {
			writeErr(w, http.StatusNotFound, "no message with that id")
			return
		}
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, string(rec.Content))
	}
}

// readIDs reads a JSON array of ids; CAP's UI sends them as strings (they
// exceed JavaScript's integers), numbers are accepted too.
func readIDs(r *http.Request) ([]int64, error) {
	var raw []json.RawMessage
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	if err := dec.Decode(&raw); err != nil {
		return nil, errors.New("the body must be a JSON array of ids")
	}
	if len(raw) == 0 {
		return nil, errEmpty
	}
	if len(raw) > MaxIDs {
		return nil, fmt.Errorf("at most %d ids at once", MaxIDs)
	}
	ids := make([]int64, 0, len(raw))
	for _, m := range raw {
		s := strings.Trim(string(m), `"`)
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil || id <= 0 {
			return nil, fmt.Errorf("%s is not a message id", m)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

var errEmpty = errors.New("no ids given")

type actionResp struct {
	Done    []string `json:"done"`
	Missing []string `json:"missing"`
}

func idStrings(ids []int64) []string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		out = append(out, strconv.FormatInt(id, 10))
	}
	return out
}

func badIDs(w http.ResponseWriter, err error) {
	code := http.StatusBadRequest
	if errors.Is(err, errEmpty) {
		code = http.StatusUnprocessableEntity
	}
	writeErr(w, code, err.Error())
}

func respondAction(w http.ResponseWriter, ids, missing []int64) {
	miss := map[int64]bool{}
	for _, id := range missing {
		miss[id] = true
	}
	var done []int64
	for _, id := range ids {
		if !miss[id] {
			done = append(done, id)
			miss[id] = true // once
		}
	}
	code := http.StatusOK
	if len(done) == 0 {
		code = http.StatusNotFound
	}
	writeJSON(w, code, actionResp{Done: idStrings(done), Missing: idStrings(missing)})
}

func (h *handler[TTx]) redrive(t storage.Table) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ids, err := readIDs(r)
		if err != nil {
			badIDs(w, err)
			return
		}
		missing, err := h.bus.Redrive(r.Context(), t, ids)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
		respondAction(w, ids, missing)
	}
}

func (h *handler[TTx]) delete(t storage.Table) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ids, err := readIDs(r)
		if err != nil {
			badIDs(w, err)
			return
		}
		st := h.bus.Storage()
		var missing, present []int64
		for _, id := range ids {
			if _, err := st.Get(r.Context(), t, id); errors.Is(err, storage.ErrNotFound) {
				missing = append(missing, id)
			} else if err != nil {
				writeErr(w, http.StatusInternalServerError, err.Error())
				return
			} else {
				present = append(present, id)
			}
		}
		if len(present) > 0 {
			if err := st.Delete(r.Context(), t, present); err != nil {
				writeErr(w, http.StatusInternalServerError, err.Error())
				return
			}
		}
		respondAction(w, ids, missing)
	}
}

type subValue struct {
	Topic         string `json:"topic"`
	ImplName      string `json:"implName"`
	MethodEscaped string `json:"methodEscaped"`
}

type subGroup struct {
	Group      string     `json:"group"`
	ChildCount int        `json:"childCount"`
	Values     []subValue `json:"values"`
}

func (h *handler[TTx]) subscribers(w http.ResponseWriter, r *http.Request) {
	groups := h.bus.Groups()
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	sort.Strings(names)
	out := make([]subGroup, 0, len(names))
	for _, g := range names {
		sg := subGroup{Group: g, ChildCount: len(groups[g]), Values: []subValue{}}
		for _, t := range groups[g] {
			sg.Values = append(sg.Values, subValue{Topic: t, ImplName: g, MethodEscaped: t})
		}
		out = append(out, sg)
	}
	writeJSON(w, http.StatusOK, out)
}

type node struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Address  string    `json:"address"`
	Port     int       `json:"port"`
	Tags     string    `json:"tags"`
	Version  string    `json:"version"`
	Started  time.Time `json:"started"`
	LastSeen time.Time `json:"lastSeen"`
	Self     bool      `json:"self"`
}

// nodes reports the instances whose heartbeat the storage saw recently
// (Bus.Nodes), this one first; a storage without heartbeats gives this
// instance alone.
func (h *handler[TTx]) nodes(w http.ResponseWriter, r *http.Request) {
	ns, err := h.bus.Nodes(r.Context())
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	self := h.bus.Node()
	out := make([]node, 0, len(ns)+1)
	out = append(out, node{ID: self.ID, Name: self.Name, Address: self.Host, Tags: "CAP", Version: self.Version,
		Started: self.Started, LastSeen: self.LastSeen, Self: true})
	for _, n := range ns {
		if n.ID == self.ID {
			out[0].LastSeen = n.LastSeen
			continue
		}
		out = append(out, node{ID: n.ID, Name: n.Name, Address: n.Host, Tags: "CAP", Version: n.Version,
			Started: n.Started, LastSeen: n.LastSeen})
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handler[TTx]) index(w http.ResponseWriter, r *http.Request) {
	tmpl, err := webFS.ReadFile("web/index.html")
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	page := strings.NewReplacer(
		"%(pathBase)", h.opts.PathBase,
		"%(servicePrefix)", h.opts.PathBase+"/api",
		"%(pollingInterval)", strconv.FormatInt(h.opts.PollingInterval.Milliseconds(), 10),
		"%(readOnly)", strconv.FormatBool(h.opts.ReadOnly),
	).Replace(string(tmpl))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'")
	_, _ = io.WriteString(w, page)
}
