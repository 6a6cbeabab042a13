package dashboard_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/go-cap/cap"
	"github.com/go-cap/cap/dashboard"
	"github.com/go-cap/cap/storage/memory"
	memtr "github.com/go-cap/cap/transport/memory"
)

// Mount the dashboard under /cap, for requests that carry an operator's
// token only.
func ExampleNew() {
	ctx := context.Background()
	bus, _ := cap.New(memory.New(), memtr.New(), cap.Options{Logger: quiet()})
	_ = bus.Start(ctx)
	defer bus.Shutdown(ctx)

	h, err := dashboard.New(bus, dashboard.Options{
		PathBase: "/cap",
		Authorize: func(r *http.Request) bool {
			return r.Header.Get("Authorization") == "Bearer operator-token"
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/cap/", h)

	for _, auth := range []string{"", "Bearer operator-token"} {
		req := httptest.NewRequest("GET", "/cap/api/stats", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		fmt.Println(rec.Code)
	}
	// Output:
	// 401
	// 200
}
