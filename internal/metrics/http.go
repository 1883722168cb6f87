package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/limitd/limitd/internal/api"
)

// acquireRoute is the long-poll route. Its requests last as long as they
// wait for a slot (up to minutes), so they get a histogram of their own with
// buckets for waits: mixed into limitd_http_request_duration_seconds they
// would make its quantiles say nothing about how fast the API answers.
const acquireRoute = "/v1/limits/{name}/acquire"

// statusClientGone is the status recorded for a request whose client went
// away before it was answered (nginx's 499), as the request log does.
const statusClientGone = 499

// Middleware counts and times every request, labelled by the route pattern
// that served it (never the raw path, which would make a series per limit
// name and lease id) or "unmatched". It belongs in api.Config.Middleware,
// where chi's routing context exists, and first there, so that requests
// refused by later middleware (authentication) are counted too.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		finished := false
		defer func() {
			// A panic leaves status 0; the recoverer further out answers
			// it with 500, which is what is counted.
			if !finished && rec.status == 0 {
				rec.status = http.StatusInternalServerError
			}
			m.observeRequest(r, rec.status, time.Since(start))
		}()
		next.ServeHTTP(rec, r)
		finished = true
		if rec.status == 0 {
			rec.status = http.StatusOK // what net/http sends for a handler that wrote nothing
			if r.Context().Err() != nil {
				rec.status = statusClientGone
			}
		}
	})
}

func (m *Metrics) observeRequest(r *http.Request, status int, took time.Duration) {
	// The pattern is complete only after the router has served r.
	route := api.RoutePattern(r)
	method := methodLabel(r.Method)
	code := strconv.Itoa(status)
	m.httpRequests.WithLabelValues(route, method, code).Inc()
	if route == acquireRoute && method == http.MethodPost {
		m.httpAcquireDuration.WithLabelValues(code).Observe(took.Seconds())
		return
	}
	m.httpDuration.WithLabelValues(route, method, code).Observe(took.Seconds())
}

// methodLabel bounds the method label: a client can send any token as a
// method, and each would otherwise be a new series.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return "other"
}

// statusRecorder remembers the first status written.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ObserveCommit records one SQLite transaction of the store's writer; it
// has the signature of store.Options.OnCommit.
func (m *Metrics) ObserveCommit(changes int, took time.Duration, err error) {
	m.commitDuration.Observe(took.Seconds())
	m.commitBatch.Observe(float64(changes))
	if err != nil {
		m.commitErrors.Inc()
	}
}
