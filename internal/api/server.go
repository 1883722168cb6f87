// Package api is limitd's HTTP interface: the chi router, request decoding
// and validation, long-poll acquires bound to the request's context, and
// problem+json errors. It is the only package that imports chi; every
// decision about slots is one call into the slots manager.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/slots"
)

// Config is what the API needs; zero bounds take the documented defaults.
type Config struct {
	Manager *slots.Manager
	Logger  *slog.Logger
	// MaxTTL bounds ttl_seconds and default_ttl_seconds (24h).
	MaxTTL time.Duration
	// DefaultWait applies when an acquire names no wait_seconds (30s);
	// longer waits than MaxWait (5m) are clamped to it.
	DefaultWait time.Duration
	MaxWait     time.Duration
	// MaxBody bounds request bodies in bytes (64 KiB).
	MaxBody int64
	// Metrics, when set, is served at GET /metrics.
	Metrics http.Handler
	// Middleware wraps every request after routing information is set up,
	// outermost first (request metrics, authentication).
	Middleware []func(http.Handler) http.Handler
}

// Server serves the API. It starts not ready: the /v1 routes answer 503
// "starting" until SetReady(true), once the state is loaded.
type Server struct {
	mgr         *slots.Manager
	log         *slog.Logger
	maxTTL      time.Duration
	defaultWait time.Duration
	maxWait     time.Duration
	maxBody     int64
	metrics     http.Handler
	middleware  []func(http.Handler) http.Handler

	ready    atomic.Bool
	draining atomic.Bool
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	s := &Server{
		mgr:         cfg.Manager,
		log:         cfg.Logger,
		maxTTL:      cfg.MaxTTL,
		defaultWait: cfg.DefaultWait,
		maxWait:     cfg.MaxWait,
		maxBody:     cfg.MaxBody,
		metrics:     cfg.Metrics,
		middleware:  cfg.Middleware,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxTTL <= 0 || s.maxTTL > limitd.MaxTTLCeiling {
		s.maxTTL = limitd.MaxTTLCeiling
	}
	if s.defaultWait <= 0 {
		s.defaultWait = 30 * time.Second
	}
	if s.maxWait <= 0 {
		s.maxWait = 5 * time.Minute
	}
	if s.maxBody <= 0 {
		s.maxBody = 64 << 10
	}
	return s
}

// SetReady marks the state loaded (or not).
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// StartDraining is the first step of a graceful shutdown: /readyz answers
// 503 from now on, and the manager answers every waiter with 503.
func (s *Server) StartDraining() {
	s.draining.Store(true)
	s.mgr.Drain()
}

// Route is one method and chi pattern that the router serves.
type Route struct {
	Method, Pattern string
	handler         http.HandlerFunc
}

// Routes lists every route, in one place; a test compares it with
// openapi.yaml.
func (s *Server) Routes() []Route {
	return []Route{
		{"GET", "/v1/limits", s.listLimits},
		{"PUT", "/v1/limits/{name}", s.putLimit},
		{"GET", "/v1/limits/{name}", s.getLimit},
		{"DELETE", "/v1/limits/{name}", s.deleteLimit},
		{"GET", "/v1/limits/{name}/leases", s.listLeases},
		{"GET", "/v1/limits/{name}/waiters", s.listWaiters},
		{"POST", "/v1/limits/{name}/acquire", s.acquire},
		{"GET", "/v1/leases/{id}", s.getLease},
		{"POST", "/v1/leases/{id}/renew", s.renew},
		{"DELETE", "/v1/leases/{id}", s.release},
		{"GET", "/healthz", s.healthz},
		{"GET", "/readyz", s.readyz},
		{"GET", "/metrics", s.serveMetrics},
	}
}

// Handler returns the router with every route and middleware.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.recoverer, s.requestID, s.logRequests)
	r.Use(s.middleware...)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, limitd.Errorf(limitd.CodeNotFound, "no such path %q: see the API reference (openapi.yaml)", r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		// RFC 9110 asks a 405 to list what is allowed; chi's default
		// handler would, a custom one has to.
		allowed := allowedMethods(r)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeProblem(w, r, limitd.Errorf(limitd.CodeMethodNotAllowed, "method %s is not allowed on %q: use %s",
			r.Method, r.URL.Path, strings.Join(allowed, " or ")))
	})
	for _, rt := range s.Routes() {
		h := rt.handler
		if len(rt.Pattern) > 3 && rt.Pattern[:4] == "/v1/" {
			h = s.whenReady(h)
		}
		r.Method(rt.Method, rt.Pattern, h)
	}
	return r
}

func (s *Server) whenReady(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			writeProblem(w, r, errStarting())
			return
		}
		next(w, r)
	}
}

// ---- operations ------------------------------------------------------------

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.draining.Load():
		writeProblem(w, r, &limitd.Error{Code: limitd.CodeShuttingDown, Message: "limitd is shutting down", RetryAfter: 1})
	case !s.ready.Load():
		writeProblem(w, r, errStarting())
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if s.metrics == nil {
		writeProblem(w, r, limitd.Errorf(limitd.CodeNotFound, "metrics are not enabled on this listener"))
		return
	}
	s.metrics.ServeHTTP(w, r)
}

// ---- limits ----------------------------------------------------------------

func (s *Server) listLimits(w http.ResponseWriter, r *http.Request) {
	limits := s.mgr.Limits()
	if filter := visibleFilter(r.Context()); filter != nil {
		kept := limits[:0]
		for _, l := range limits {
			if filter(l.Name) {
				kept = append(kept, l)
			}
		}
		limits = kept
	}
	writeJSON(w, http.StatusOK, limitd.LimitList{Limits: limits})
}

func (s *Server) putLimit(w http.ResponseWriter, r *http.Request) {
	name, err := nameParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var spec limitd.LimitSpec
	if err := decodeBody(w, r, s.maxBody, &spec); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := spec.Validate(s.maxTTL); err != nil {
		s.writeError(w, r, err)
		return
	}
	var ttl time.Duration
	if spec.DefaultTTLSeconds != nil {
		ttl = limitd.Duration(*spec.DefaultTTLSeconds)
	}
	l, before, err := s.mgr.PutLimit(r.Context(), name, slots.LimitSpec{Capacity: *spec.Capacity, DefaultTTL: ttl, Description: spec.Description})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if before == nil {
		status = http.StatusCreated
		s.audit(r, "limit created", slog.String("limit", name), slog.Int("capacity", l.Capacity))
	} else {
		s.audit(r, "limit replaced", slog.String("limit", name),
			slog.Int("capacity_before", before.Capacity), slog.Int("capacity", l.Capacity))
	}
	w.Header().Set("Location", "/v1/limits/"+name)
	writeJSON(w, status, l)
}

func (s *Server) getLimit(w http.ResponseWriter, r *http.Request) {
	name, err := nameParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	l, err := s.mgr.GetLimit(name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

func (s *Server) deleteLimit(w http.ResponseWriter, r *http.Request) {
	name, err := nameParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	before, err := s.mgr.DeleteLimit(r.Context(), name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.audit(r, "limit deleted", slog.String("limit", name), slog.Int("capacity", before.Capacity),
		slog.Int("in_use", before.InUse), slog.Int("waiting", before.Waiting))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listLeases(w http.ResponseWriter, r *http.Request) {
	name, err := nameParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	leases, err := s.mgr.Leases(name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, limitd.LeaseList{Leases: leases})
}

func (s *Server) listWaiters(w http.ResponseWriter, r *http.Request) {
	name, err := nameParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	waiters, err := s.mgr.Waiters(name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, limitd.WaiterList{Waiters: waiters})
}

// ---- leases ----------------------------------------------------------------

func (s *Server) acquire(w http.ResponseWriter, r *http.Request) {
	name, err := nameParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req limitd.AcquireRequest
	if err := decodeBody(w, r, s.maxBody, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := req.Validate(s.maxTTL); err != nil {
		s.writeError(w, r, err)
		return
	}
	key, err := idempotencyKey(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	p := slots.AcquireParams{Slots: 1, Wait: s.defaultWait, Holder: req.Holder, IdempotencyKey: key}
	if req.Slots != nil {
		p.Slots = *req.Slots
	}
	if req.TTLSeconds != nil {
		p.TTL = limitd.Duration(*req.TTLSeconds)
	}
	if req.WaitSeconds != nil {
		p.Wait = min(limitd.Duration(*req.WaitSeconds), s.maxWait)
	}
	lease, replayed, err := s.mgr.Acquire(r.Context(), name, p)
	if err != nil {
		if r.Context().Err() != nil {
			// The client is gone; the manager left nothing behind, and
			// there is nobody to answer.
			return
		}
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/leases/"+lease.ID)
	status := http.StatusCreated
	if replayed {
		status = http.StatusOK
	}
	writeJSON(w, status, lease)
}

func idempotencyKey(r *http.Request) (string, error) {
	values := r.Header.Values("Idempotency-Key")
	switch len(values) {
	case 0:
		return "", nil
	case 1:
		if values[0] == "" {
			return "", limitd.Errorf(limitd.CodeInvalidRequest, "header \"Idempotency-Key\" is empty: it must be 1 to %d printable ASCII characters", limitd.MaxIdempotencyKey)
		}
		return values[0], limitd.ValidateIdempotencyKey(values[0])
	}
	return "", limitd.Errorf(limitd.CodeInvalidRequest, "header \"Idempotency-Key\" is given %d times: send it once", len(values))
}

func (s *Server) getLease(w http.ResponseWriter, r *http.Request) {
	id, err := leaseParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	lease, err := s.mgr.Lease(id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	setLogLimit(r.Context(), lease.Limit)
	writeJSON(w, http.StatusOK, lease)
}

func (s *Server) renew(w http.ResponseWriter, r *http.Request) {
	id, err := leaseParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req limitd.RenewRequest
	if err := decodeBody(w, r, s.maxBody, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := req.Validate(s.maxTTL); err != nil {
		s.writeError(w, r, err)
		return
	}
	var ttl time.Duration
	if req.TTLSeconds != nil {
		ttl = limitd.Duration(*req.TTLSeconds)
	}
	lease, err := s.mgr.Renew(r.Context(), id, ttl)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	setLogLimit(r.Context(), lease.Limit)
	writeJSON(w, http.StatusOK, lease)
}

func (s *Server) release(w http.ResponseWriter, r *http.Request) {
	id, err := leaseParam(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// A lease's limit never changes, so reading it before the release
	// cannot name a wrong one; a lease already gone is Release's 404.
	limit, _ := s.mgr.LeaseLimit(id)
	if limit != "" {
		setLogLimit(r.Context(), limit)
	}
	if err := s.mgr.Release(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	if ri := info(r.Context()); ri != nil && ri.admin {
		// An admin's token may release anyone's lease: the holder will
		// find its slots gone, and this line says who took them.
		s.audit(r, "lease revoked", slog.String("lease", id), slog.String("limit", limit))
	}
	w.WriteHeader(http.StatusNoContent)
}

// nameParam returns the {name} path parameter, unescaped and validated, so
// a percent-encoded "/" or any other bad name is a 400 on every route.
// It also names the limit in the request's log line.
func nameParam(r *http.Request) (string, error) {
	name, err := ParseLimitName(chi.URLParam(r, "name"))
	if err != nil {
		return "", err
	}
	setLogLimit(r.Context(), name)
	return name, nil
}

// leaseParam returns the {id} path parameter in its canonical form.
func leaseParam(r *http.Request) (string, error) {
	return ParseLeaseID(chi.URLParam(r, "id"))
}

// ---- context values shared with middleware -----------------------------------

type ctxKey int

const (
	ctxRequestID ctxKey = iota
	ctxLogLimit
	ctxVisible
)

// WithVisibleFilter returns a context in which GET /v1/limits lists only the
// limits for which visible returns true (used by authentication).
func WithVisibleFilter(ctx context.Context, visible func(name string) bool) context.Context {
	return context.WithValue(ctx, ctxVisible, visible)
}

func visibleFilter(ctx context.Context) func(string) bool {
	f, _ := ctx.Value(ctxVisible).(func(string) bool)
	return f
}
