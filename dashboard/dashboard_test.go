package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/dashboard"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/memory"
	memtr "github.com/go-cap/cap/transport/memory"
	"github.com/stretchr/testify/require"
)

type world struct {
	bus    *cap.Bus[*memory.Tx]
	store  *memory.Storage
	fixed  atomic.Bool
	srv    *httptest.Server
	failed int64 // id of a Received row Failed for good
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newWorld runs a bus with one message handled and one failed for good,
// and serves its dashboard with opts.
func newWorld(t *testing.T, opts dashboard.Options) *world {
	t.Helper()
	return newWorldOn(t, nil, opts)
}

// plainStore is a storage with none of the optional interfaces of the
// memory storage (HistoryReader, NodeRegistry...).
type plainStore struct{ storage.Storage[*memory.Tx] }

// newWorldOn is newWorld with the bus over wrap(store) when wrap is set.
func newWorldOn(t *testing.T, wrap func(*memory.Storage) storage.Storage[*memory.Tx], opts dashboard.Options) *world {
	t.Helper()
	w := &world{store: memory.New()}
	var store storage.Storage[*memory.Tx] = w.store
	if wrap != nil {
		store = wrap(w.store)
	}
	bus, err := cap.New(store, memtr.New(), cap.Options{Logger: quiet(), PollInterval: 50 * time.Millisecond})
	require.NoError(t, err)
	w.bus = bus
	require.NoError(t, cap.Subscribe(bus, "orders", "billing", func(ctx context.Context, m cap.Msg[string]) error {
		if m.Payload == "bad" && !w.fixed.Load() {
			return cap.Permanent(errors.New("cannot bill"))
		}
		return nil
	}))
	ctx := context.Background()
	require.NoError(t, bus.Start(ctx))
	t.Cleanup(func() { _ = bus.Shutdown(context.Background()) })
	require.NoError(t, bus.Publish(ctx, "orders", "good"))
	require.NoError(t, bus.Publish(ctx, "orders", "bad"))
	require.Eventually(t, func() bool {
		// A handler can run before its message's Published row is marked
		// sent, so both tables are waited for.
		r, _ := w.store.Counts(ctx, storage.Received)
		p, _ := w.store.Counts(ctx, storage.Published)
		return r[storage.StatusSucceeded] == 1 && r[storage.StatusFailed] == 1 && p[storage.StatusSucceeded] == 2
	}, 10*time.Second, 10*time.Millisecond)
	recs, _, err := w.store.List(ctx, storage.Received, storage.ListQuery{Status: storage.StatusFailed})
	require.NoError(t, err)
	w.failed = recs[0].ID
	h, err := dashboard.New(bus, opts)
	require.NoError(t, err)
	w.srv = httptest.NewServer(h)
	t.Cleanup(w.srv.Close)
	return w
}

func (w *world) do(t *testing.T, method, path, body string, hdr ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, w.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

func keys(t *testing.T, b []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b, &m), string(b))
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestNewRequiresAuthorization(t *testing.T) {
	bus, err := cap.New(memory.New(), memtr.New(), cap.Options{Logger: quiet()})
	require.NoError(t, err)
	_, err = dashboard.New(bus, dashboard.Options{})
	require.ErrorIs(t, err, dashboard.ErrNoAuthorization)
	_, err = dashboard.New(bus, dashboard.Options{AllowAnonymous: true, PathBase: "cap"})
	require.Error(t, err)
}

func TestRoutes(t *testing.T) {
	w := newWorld(t, dashboard.Options{AllowAnonymous: true})

	code, b := w.do(t, "GET", "/api/health", "")
	require.Equal(t, 200, code)
	require.Equal(t, "OK", string(b))

	code, b = w.do(t, "GET", "/api/meta", "")
	require.Equal(t, 200, code)
	require.Subset(t, keys(t, b), []string{"cap", "broker", "storage"})
	var meta struct{ Cap, Broker, Storage struct{ Name string } }
	require.NoError(t, json.Unmarshal(b, &meta))
	require.Equal(t, "InMemory", meta.Storage.Name)
	require.Equal(t, "InMemory", meta.Broker.Name)

	code, b = w.do(t, "GET", "/api/stats", "")
	require.Equal(t, 200, code)
	require.Subset(t, keys(t, b), []string{"servers", "subscribers", "publishedSucceeded", "publishedDelayed",
		"receivedSucceeded", "publishedFailed", "receivedFailed"})
	var st map[string]int64
	require.NoError(t, json.Unmarshal(b, &st))
	require.Equal(t, int64(2), st["publishedSucceeded"])
	require.Equal(t, int64(1), st["receivedSucceeded"])
	require.Equal(t, int64(1), st["receivedFailed"])
	require.Equal(t, int64(1), st["subscribers"])

	code, b = w.do(t, "GET", "/api/metrics-realtime", "")
	require.Equal(t, 200, code)
	var rt [][]float64
	require.NoError(t, json.Unmarshal(b, &rt))
	require.Len(t, rt, 4)

	code, b = w.do(t, "GET", "/api/metrics-history", "")
	require.Equal(t, 200, code)
	var hist struct {
		DayHour, PublishSuccessed, PublishFailed, SubscribeSuccessed, SubscribeFailed []int64
	}
	require.NoError(t, json.Unmarshal(b, &hist))
	require.Subset(t, keys(t, b), []string{"dayHour", "publishSuccessed", "publishFailed", "subscribeSuccessed", "subscribeFailed"})
	require.Len(t, hist.DayHour, 24)
	require.Equal(t, int64(2), hist.PublishSuccessed[23])
	require.Equal(t, int64(1), hist.SubscribeFailed[23])

	code, b = w.do(t, "GET", "/api/received/FAILED?perPage=5&currentPage=1&name=ORD&group=billing.v1", "")
	require.Equal(t, 200, code, string(b))
	require.ElementsMatch(t, []string{"items", "totals", "pageIndex", "pageSize"}, keys(t, b))
	var page struct {
		Items     []map[string]any
		Totals    int64
		PageIndex int
		PageSize  int
	}
	require.NoError(t, json.Unmarshal(b, &page))
	require.EqualValues(t, 1, page.Totals)
	require.Equal(t, 1, page.PageIndex)
	require.Equal(t, 5, page.PageSize)
	require.Len(t, page.Items, 1)
	for _, k := range []string{"id", "version", "group", "name", "content", "added", "expiresAt", "retries", "statusName"} {
		require.Contains(t, page.Items[0], k)
	}
	require.Equal(t, "Failed", page.Items[0]["statusName"])

	code, b = w.do(t, "GET", "/api/published/succeeded?content=bad", "")
	require.Equal(t, 200, code)
	require.NoError(t, json.Unmarshal(b, &page))
	require.EqualValues(t, 1, page.Totals)

	code, b = w.do(t, "GET", "/api/received/message/"+itoa(w.failed), "")
	require.Equal(t, 200, code)
	var content string
	require.NoError(t, json.Unmarshal(b, &content))
	require.Contains(t, content, `"Headers"`)
	require.Contains(t, content, `"bad"`)

	code, b = w.do(t, "GET", "/api/subscriber", "")
	require.Equal(t, 200, code)
	var subs []struct {
		Group      string
		ChildCount int
		Values     []struct{ Topic, ImplName, MethodEscaped string }
	}
	require.NoError(t, json.Unmarshal(b, &subs))
	require.Len(t, subs, 1)
	require.Equal(t, "billing.v1", subs[0].Group)
	require.Equal(t, 1, subs[0].ChildCount)
	require.Equal(t, "orders", subs[0].Values[0].Topic)

	checkNodes(t, w)

	code, b = w.do(t, "GET", "/", "")
	require.Equal(t, 200, code)
	require.Contains(t, string(b), "static/app.js")
	require.NotContains(t, string(b), "%(")
	for _, f := range []string{"/static/app.js", "/static/app.css"} {
		code, _ = w.do(t, "GET", f, "")
		require.Equal(t, 200, code, f)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestReexecuteAndDelete(t *testing.T) {
	w := newWorld(t, dashboard.Options{AllowAnonymous: true})
	w.fixed.Store(true)
	id := itoa(w.failed)
	code, b := w.do(t, "POST", "/api/received/reexecute", `["`+id+`", "999999"]`, "Sec-Fetch-Site", "same-origin")
	require.Equal(t, 200, code, string(b))
	var res struct{ Done, Missing []string }
	require.NoError(t, json.Unmarshal(b, &res))
	require.Equal(t, []string{id}, res.Done)
	require.Equal(t, []string{"999999"}, res.Missing)
	require.Eventually(t, func() bool {
		r, err := w.store.Get(context.Background(), storage.Received, w.failed)
		return err == nil && r.Status == storage.StatusSucceeded
	}, 5*time.Second, 10*time.Millisecond)

	recs, _, err := w.store.List(context.Background(), storage.Published, storage.ListQuery{})
	require.NoError(t, err)
	pid := itoa(recs[0].ID)
	code, b = w.do(t, "POST", "/api/published/requeue", `[`+pid+`]`)
	require.Equal(t, 200, code, string(b))
	code, _ = w.do(t, "POST", "/api/published/requeue", `[424242]`)
	require.Equal(t, 404, code)

	code, b = w.do(t, "POST", "/api/received/delete", `["`+id+`"]`, "Origin", w.srv.URL)
	require.Equal(t, 200, code, string(b))
	_, err = w.store.Get(context.Background(), storage.Received, w.failed)
	require.ErrorIs(t, err, storage.ErrNotFound)
	code, _ = w.do(t, "GET", "/api/received/message/"+id, "")
	require.Equal(t, 404, code)
	code, _ = w.do(t, "POST", "/api/published/delete", `["`+pid+`"]`)
	require.Equal(t, 200, code)
}

func TestBadInput(t *testing.T) {
	w := newWorld(t, dashboard.Options{AllowAnonymous: true})
	for _, c := range []struct {
		method, path, body string
		code               int
	}{
		{"GET", "/api/published/bogus", "", 400},
		{"GET", "/api/published/succeeded?perPage=0", "", 400},
		{"GET", "/api/published/succeeded?perPage=201", "", 400},
		{"GET", "/api/published/succeeded?perPage=x", "", 400},
		{"GET", "/api/published/succeeded?currentPage=0", "", 400},
		{"GET", "/api/received/failed?name=" + strings.Repeat("a", 201), "", 400},
		{"GET", "/api/published/message/abc", "", 400},
		{"GET", "/api/published/message/-1", "", 400},
		{"GET", "/api/published/message/123456789", "", 404},
		{"POST", "/api/published/requeue", `[]`, 422},
		{"POST", "/api/published/requeue", `{"id":1}`, 400},
		{"POST", "/api/published/requeue", `["x"]`, 400},
		{"POST", "/api/received/reexecute", `[1.5]`, 400},
		{"POST", "/api/received/delete", `not json`, 400},
		{"POST", "/api/received/delete", "[" + strings.TrimSuffix(strings.Repeat("1,", 1001), ",") + "]", 400},
		{"GET", "/api/nothing", "", 404},
		{"DELETE", "/api/published/delete", "", 404},
	} {
		code, b := w.do(t, c.method, c.path, c.body)
		require.Equal(t, c.code, code, "%s %s: %s", c.method, c.path, b)
		if c.code != 405 {
			var e struct{ Error string }
			require.NoError(t, json.Unmarshal(b, &e), "%s %s: %s", c.method, c.path, b)
			require.NotEmpty(t, e.Error)
		}
	}
}

func TestAuthRefused(t *testing.T) {
	w := newWorld(t, dashboard.Options{Authorize: func(r *http.Request) bool { return r.Header.Get("X-Admin") == "yes" }})
	for _, p := range []string{"/api/stats", "/api/meta", "/api/published/failed", "/", "/static/app.js"} {
		code, _ := w.do(t, "GET", p, "")
		require.Equal(t, 401, code, p)
	}
	code, _ := w.do(t, "POST", "/api/received/reexecute", `["`+itoa(w.failed)+`"]`)
	require.Equal(t, 401, code)
	code, _ = w.do(t, "GET", "/api/stats", "", "X-Admin", "yes")
	require.Equal(t, 200, code)
	code, _ = w.do(t, "GET", "/api/health", "")
	require.Equal(t, 200, code, "health is anonymous")
}

func TestCrossSiteRefused(t *testing.T) {
	w := newWorld(t, dashboard.Options{AllowAnonymous: true})
	id := itoa(w.failed)
	for _, hdr := range [][]string{
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"},
		{"Origin", "https://evil.example"},
		{"Origin", "null"},
	} {
		code, b := w.do(t, "POST", "/api/received/delete", `["`+id+`"]`, hdr...)
		require.Equal(t, 403, code, "%v: %s", hdr, b)
	}
	_, err := w.store.Get(context.Background(), storage.Received, w.failed)
	require.NoError(t, err, "the row is still there")
}

func TestReadOnly(t *testing.T) {
	w := newWorld(t, dashboard.Options{AllowAnonymous: true, ReadOnly: true})
	for _, p := range []string{"/api/published/requeue", "/api/received/reexecute", "/api/published/delete", "/api/received/delete"} {
		code, _ := w.do(t, "POST", p, `["`+itoa(w.failed)+`"]`)
		require.Equal(t, 403, code, p)
	}
	code, b := w.do(t, "GET", "/", "")
	require.Equal(t, 200, code)
	require.Contains(t, string(b), `data-readonly="true"`)
	code, b = w.do(t, "GET", "/api/meta", "")
	require.Equal(t, 200, code)
	require.Contains(t, string(b), `"readOnly":true`)
	r, err := w.store.Get(context.Background(), storage.Received, w.failed)
	require.NoError(t, err)
	require.Equal(t, storage.StatusFailed, r.Status)
}

func TestPathBase(t *testing.T) {
	w := newWorld(t, dashboard.Options{AllowAnonymous: true, PathBase: "/cap"})
	code, _ := w.do(t, "GET", "/cap/api/stats", "")
	require.Equal(t, 200, code)
	code, _ = w.do(t, "GET", "/api/stats", "")
	require.Equal(t, 404, code)
	req, _ := http.NewRequest("GET", w.srv.URL+"/cap", nil)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 301, resp.StatusCode)
	require.Equal(t, "/cap/", resp.Header.Get("Location"))

	// Or mounted with http.StripPrefix.
	h, err := dashboard.New(w.bus, dashboard.Options{AllowAnonymous: true})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/ops/cap/", http.StripPrefix("/ops/cap", h))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/ops/cap/api/stats", nil))
	require.Equal(t, 200, rec.Code)
}

type nodeJSON struct {
	ID, Name, Address, Version string
	Started, LastSeen          time.Time
	Self                       bool
}

func getNodes(t *testing.T, w *world) []nodeJSON {
	t.Helper()
	code, b := w.do(t, "GET", "/api/nodes", "")
	require.Equal(t, 200, code, string(b))
	var raw []json.RawMessage
	require.NoError(t, json.Unmarshal(b, &raw))
	for _, r := range raw {
		require.Subset(t, keys(t, r), []string{"id", "name", "address", "version", "started", "lastSeen", "self"})
	}
	var nodes []nodeJSON
	require.NoError(t, json.Unmarshal(b, &nodes))
	return nodes
}

// checkNodes: /nodes lists the serving instance first and every other bus
// on the database from its heartbeat; a bus that shuts down leaves it.
func checkNodes(t *testing.T, w *world) {
	t.Helper()
	nodes := getNodes(t, w)
	require.Len(t, nodes, 1)
	require.True(t, nodes[0].Self)
	require.Equal(t, w.bus.Node().ID, nodes[0].ID)
	require.False(t, nodes[0].Started.IsZero())

	other, err := cap.New(w.store, memtr.New(), cap.Options{Logger: quiet(), InstanceID: "billing-7"})
	require.NoError(t, err)
	require.NoError(t, other.Start(context.Background()))
	nodes = getNodes(t, w)
	require.Len(t, nodes, 2)
	require.True(t, nodes[0].Self)
	require.False(t, nodes[1].Self)
	require.Equal(t, other.Node().ID, nodes[1].ID)
	require.Equal(t, "billing-7", nodes[1].Name)
	require.NotEmpty(t, nodes[1].Version)
	require.NoError(t, other.Shutdown(context.Background()))
	require.Len(t, getNodes(t, w), 1, "a bus that shut down is no longer listed")
}

// TestWithoutOptionalStorage: on a storage that keeps no heartbeat and
// cannot count by hour, /nodes gives the serving instance and the history
// pages through List, with the same figures.
func TestWithoutOptionalStorage(t *testing.T) {
	t.Parallel()
	w := newWorldOn(t, func(s *memory.Storage) storage.Storage[*memory.Tx] { return plainStore{s} },
		dashboard.Options{AllowAnonymous: true})
	nodes := getNodes(t, w)
	require.Len(t, nodes, 1)
	require.True(t, nodes[0].Self)
	code, b := w.do(t, "GET", "/api/metrics-history", "")
	require.Equal(t, 200, code)
	var hist struct {
		PublishSuccessed, SubscribeFailed []int64
		Truncated                         bool
	}
	require.NoError(t, json.Unmarshal(b, &hist))
	require.Equal(t, int64(2), hist.PublishSuccessed[23])
	require.Equal(t, int64(1), hist.SubscribeFailed[23])
	require.False(t, hist.Truncated)
}
