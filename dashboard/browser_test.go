package dashboard_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-cap/cap"
	"github.com/go-cap/cap/dashboard"
	"github.com/go-cap/cap/storage"
	"github.com/go-cap/cap/storage/sqlite"
	memtr "github.com/go-cap/cap/transport/memory"
	"github.com/stretchr/testify/require"
)

// chromiumPath is Debian's chromium, or CAP_CHROMIUM.
func chromiumPath(t *testing.T) string {
	p := os.Getenv("CAP_CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(p); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium not found at %s: %v", p, err)
		}
		t.Skipf("chromium not found at %s: %v", p, err)
	}
	return p
}

// artifactsDir is CAP_ARTIFACTS when set, else a temporary directory.
func artifactsDir(t *testing.T) string {
	if d := os.Getenv("CAP_ARTIFACTS"); d != "" {
		require.NoError(t, os.MkdirAll(d, 0o755))
		return d
	}
	return t.TempDir()
}

// TestBrowser drives the UI in headless Chromium against a running bus on
// SQLite: it sees the counts, opens the Failed tab of Received, selects a
// failed message, re-executes it once its handler was fixed and sees it
// become Succeeded.
func TestBrowser(t *testing.T) {
	chrome := chromiumPath(t)
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "cap.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	store, err := sqlite.New(db, sqlite.Options{})
	require.NoError(t, err)
	bus, err := cap.New(store, memtr.New(), cap.Options{Logger: quiet(), PollInterval: 100 * time.Millisecond})
	require.NoError(t, err)
	var fixed atomic.Bool
	require.NoError(t, cap.Subscribe(bus, "orders.created", "billing", func(ctx context.Context, m cap.Msg[map[string]any]) error {
		if m.Payload["bad"] == true && !fixed.Load() {
			return cap.Permanent(errors.New("card declined"))
		}
		return nil
	}))
	require.NoError(t, cap.Subscribe(bus, "orders.created", "mailer", func(ctx context.Context, m cap.Msg[map[string]any]) error {
		return nil
	}))
	require.NoError(t, bus.Start(ctx))
	t.Cleanup(func() { _ = bus.Shutdown(context.Background()) })
	for i := range 8 {
		require.NoError(t, bus.Publish(ctx, "orders.created", map[string]any{"id": i, "bad": i%4 == 1}))
	}
	require.Eventually(t, func() bool {
		c, _ := store.Counts(ctx, storage.Received)
		return c[storage.StatusSucceeded] == 14 && c[storage.StatusFailed] == 2
	}, 10*time.Second, 20*time.Millisecond)
	failed, _, err := store.List(ctx, storage.Received, storage.ListQuery{Status: storage.StatusFailed})
	require.NoError(t, err)
	target := failed[0].ID
	id := strconv.FormatInt(target, 10)

	h, err := dashboard.New(bus, dashboard.Options{AllowAnonymous: true, PollingInterval: 500 * time.Millisecond})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chrome), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 860))
	defer cancelAlloc()
	bctx, cancelB := chromedp.NewContext(alloc)
	defer cancelB()
	bctx, cancelT := context.WithTimeout(bctx, 50*time.Second)
	defer cancelT()

	poll := func(expr string, within time.Duration) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(within))(ctx, tg)
			return chromedp.Void{}, err
		}
	}
	statIs := func(name string, v int) chromedp.Action[chromedp.Void] {
		return poll(fmt.Sprintf(`(function(){var e=document.getElementById("stat-%s");return !!e && e.textContent==="%d";})()`, name, v),
			10*time.Second)
	}
	dir := artifactsDir(t)
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(srv.URL+"/"),
		statIs("receivedFailed", 2), statIs("receivedSucceeded", 14), statIs("publishedSucceeded", 8),
		poll(`document.getElementById("meta").textContent.indexOf("SQLite") >= 0`, 10*time.Second),
		// Only so that the realtime chart of the screenshot has a few seconds.
		chromedp.Sleep(1500*time.Millisecond),
	), "home page")
	home, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dashboard-home.png"), home, 0o644))

	row := fmt.Sprintf(`tr[data-id="%s"]`, id)
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`a[data-nav="received"]`)),
		chromedp.Click(chromedp.CSS(`.tabs a[data-status="failed"]`)),
		chromedp.WaitVisible(chromedp.CSS(row)),
		poll(`document.querySelectorAll("#rows tr").length === 2`, 10*time.Second),
		chromedp.Click(chromedp.CSS(row+` input.sel`)),
		chromedp.WaitEnabled(chromedp.CSS(`#btn-redrive`)),
	), "failed tab")
	list, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dashboard-received-failed.png"), list, 0o644))

	fixed.Store(true)
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`#btn-redrive`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		chromedp.Click(chromedp.CSS(`#confirm-ok`)),
		poll(`document.getElementById("list-msg").textContent.indexOf("1 done") >= 0`, 10*time.Second),
	), "re-execute")
	msg, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#list-msg`)))
	require.NoError(t, err)
	require.Contains(t, msg, "Re-execute: 1 done")
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`.tabs a[data-status="succeeded"]`)),
		// The list refreshes itself; the message shows up Succeeded.
		poll(fmt.Sprintf(`(function(){var r=document.querySelector('%s .status');return !!r && r.textContent==="Succeeded";})()`, row),
			15*time.Second),
	), "succeeded tab")
	rec, err := store.Get(ctx, storage.Received, target)
	require.NoError(t, err)
	require.Equal(t, storage.StatusSucceeded, rec.Status)

	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`a[data-nav="home"]`)),
		statIs("receivedFailed", 1),
	))
	left, err := chromedp.Run(bctx, chromedp.Evaluate[int](`parseInt(document.getElementById("stat-receivedFailed").textContent, 10)`))
	require.NoError(t, err)
	require.Equal(t, 1, left)
}
