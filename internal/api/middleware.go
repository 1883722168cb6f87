package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/limitd/limitd"
	"github.com/oklog/ulid/v2"
)

// requestInfo is filled in as a request is handled and read by the request
// log line at its end; it is a pointer in the context so that handlers can
// add to it.
type requestInfo struct {
	id        string
	limit     string
	principal string
	// admin is set for a principal that may change any limit or lease, so
	// that what it does to other holders' leases is audited.
	admin bool
	// ready is the serving server's readiness, for CheckReady.
	ready *atomic.Bool
}

func info(ctx context.Context) *requestInfo {
	ri, _ := ctx.Value(ctxRequestID).(*requestInfo)
	return ri
}

func requestID(ctx context.Context) string {
	if ri := info(ctx); ri != nil {
		return ri.id
	}
	return ""
}

func setLogLimit(ctx context.Context, limit string) {
	if ri := info(ctx); ri != nil {
		ri.limit = limit
	}
}

// SetPrincipal records who made the request (a token's name, never the
// token), for the request log and the audit trail of admin changes; admin
// tells that it may act on any limit, so that its release of a lease is
// audited as the revocation of someone else's slots.
func SetPrincipal(ctx context.Context, name string, admin bool) {
	if ri := info(ctx); ri != nil {
		ri.principal = name
		ri.admin = admin
	}
}

// requestID takes the caller's X-Request-Id when it is sane, or makes one,
// and echoes it in the response so logs on both sides can be matched.
func (s *Server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !saneRequestID(id) {
			id = ulid.Make().String()
		}
		w.Header().Set("X-Request-Id", id)
		ctx := context.WithValue(r.Context(), ctxRequestID, &requestInfo{id: id, ready: &s.ready})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func saneRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// statusRecorder remembers the status a handler wrote.
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

// logRequests writes one line per request at info level. A long-poll whose
// client went away has no status; it is logged as 499 (client closed), the
// convention nginx made familiar.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		status := rec.status
		if status == 0 {
			status = 499
		}
		ri := info(r.Context())
		route := chiPattern(r)
		if route == "" {
			// Middleware (authentication) answered before the router
			// matched: the handler that would name the limit never ran.
			var params map[string]string
			route, params = MatchRoute(r)
			if name, err := ParseLimitName(params["name"]); err == nil && ri.limit == "" {
				ri.limit = name
			}
		}
		if route == "" {
			route = unmatched
		}
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("route", route),
			slog.Int("status", status),
			slog.Duration("duration", time.Since(start)),
			slog.String("request_id", ri.id),
		}
		if ri.limit != "" {
			attrs = append(attrs, slog.String("limit", ri.limit))
		}
		if ri.principal != "" {
			attrs = append(attrs, slog.String("token", ri.principal))
		}
		level := slog.LevelInfo
		if probe(r.URL.Path) && status < 400 {
			// Health checks and scrapes come every few seconds; at info
			// they would drown the lines that matter.
			level = slog.LevelDebug
		}
		s.log.LogAttrs(r.Context(), level, "request", attrs...)
	})
}

func probe(path string) bool {
	return path == "/healthz" || path == "/readyz" || path == "/metrics"
}

// unmatched is the route of a request that no route serves.
const unmatched = "unmatched"

// RoutePattern is the chi pattern that matched r (never the raw path, which
// would make unbounded label values), or "unmatched". It is complete only
// after the router has served r. A request that middleware refused before
// the router matched it (authentication's 401 and 403) has no chi pattern;
// it gets the pattern the router would have matched, so that refusals are
// counted on the route they were aimed at.
func RoutePattern(r *http.Request) string {
	if p := chiPattern(r); p != "" {
		return p
	}
	if p, _ := MatchRoute(r); p != "" {
		return p
	}
	return unmatched
}

func chiPattern(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil {
		return rc.RoutePattern()
	}
	return ""
}

// audit logs an admin change with who made it.
func (s *Server) audit(r *http.Request, msg string, attrs ...slog.Attr) {
	ri := info(r.Context())
	attrs = append(attrs, slog.String("request_id", ri.id))
	if ri.principal != "" {
		attrs = append(attrs, slog.String("token", ri.principal))
	}
	s.log.LogAttrs(r.Context(), slog.LevelInfo, msg, attrs...)
}

// recoverer turns a panic in a handler into a logged 500, so one bad request
// cannot take the daemon (and every waiter) down.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil || v == http.ErrAbortHandler {
				if v != nil {
					panic(v)
				}
				return
			}
			s.log.ErrorContext(r.Context(), "panic in handler", "panic", fmt.Sprint(v), "stack", string(debug.Stack()),
				"method", r.Method, "path", r.URL.Path)
			writeProblem(w, r, limitd.Errorf(limitd.CodeInternal, "internal error"))
		}()
		next.ServeHTTP(w, r)
	})
}
