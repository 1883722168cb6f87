package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/client"
)

func TestLimitsAdmin(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	ctx := t.Context()

	l, err := c.PutLimit(ctx, "b-limit", client.LimitConfig{Capacity: 3, DefaultTTL: 90 * time.Second, Description: "the b"})
	if err != nil {
		t.Fatal(err)
	}
	if l.Name != "b-limit" || l.Capacity != 3 || l.DefaultTTLSeconds != 90 || l.Description != "the b" {
		t.Errorf("PutLimit = %+v", l)
	}
	if _, err := c.PutLimit(ctx, "a-limit", client.LimitConfig{Capacity: 0}); err != nil {
		t.Fatal(err)
	}
	if l, err = c.PutLimit(ctx, "b-limit", client.LimitConfig{Capacity: 5}); err != nil || l.Capacity != 5 {
		t.Fatalf("replacing: %+v, %v", l, err)
	}
	got, err := c.GetLimit(ctx, "b-limit")
	if err != nil || got.Capacity != 5 || got.DefaultTTLSeconds != 60 {
		t.Fatalf("GetLimit = %+v, %v; want capacity 5 and the default TTL back to 60", got, err)
	}
	all, err := c.ListLimits(ctx)
	if err != nil || len(all) != 2 || all[0].Name != "a-limit" || all[1].Name != "b-limit" {
		t.Fatalf("ListLimits = %+v, %v; want a-limit, b-limit", all, err)
	}
	if err := c.DeleteLimit(ctx, "a-limit"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetLimit(ctx, "a-limit"); !errors.Is(err, client.ErrLimitNotFound) {
		t.Fatalf("GetLimit of a deleted limit = %v", err)
	}
	if err := c.DeleteLimit(ctx, "a-limit"); !errors.Is(err, client.ErrLimitNotFound) {
		t.Fatalf("DeleteLimit twice = %v", err)
	}
	if _, err := c.PutLimit(ctx, "x", client.LimitConfig{Capacity: -1}); !errors.Is(err, client.ErrInvalidRequest) {
		t.Fatalf("PutLimit with capacity -1 = %v", err)
	}
	if _, err := c.GetLimit(ctx, "a/b"); !errors.Is(err, client.ErrInvalidRequest) {
		t.Fatalf("GetLimit(a/b) = %v", err)
	}
}

func TestLeasesAndWaitersAdmin(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	name := limitName(t)
	mustPutLimit(t, c, name, 2)
	a := mustAcquire(t, c, name, client.Holder("a"))
	b := mustAcquire(t, c, name, client.Holder("b"))
	ls, err := c.Leases(t.Context(), name)
	if err != nil || len(ls) != 2 || ls[0].ID != a.ID() || ls[1].ID != b.ID() {
		t.Fatalf("Leases = %+v, %v; want a then b", ls, err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 2)
	for _, h := range []string{"w1", "w2"} {
		go func() {
			_, err := c.Acquire(ctx, name, client.Holder(h), client.Slots(2))
			errc <- err
		}()
		eventually(t, h+" to queue", func() bool { return waitersOf(t, c, name) >= 1 && lastHolder(t, c, name) == h })
	}
	ws, err := c.Waiters(t.Context(), name)
	if err != nil || len(ws) != 2 || ws[0].Holder != "w1" || ws[1].Holder != "w2" || ws[0].Slots != 2 {
		t.Fatalf("Waiters = %+v, %v; want w1 then w2", ws, err)
	}
	cancel()
	for range 2 {
		if err := recv(t, errc, "the waiters to give up"); !errors.Is(err, context.Canceled) {
			t.Errorf("waiter: %v", err)
		}
	}

	got, err := c.GetLease(t.Context(), a.ID())
	if err != nil || got.ID != a.ID() || got.Holder != "a" {
		t.Fatalf("GetLease = %+v, %v", got, err)
	}
	renewed, err := c.Renew(t.Context(), a.ID(), 10*time.Minute)
	if err != nil || renewed.TTLSeconds != 600 || time.Until(renewed.ExpiresAt) < 9*time.Minute {
		t.Fatalf("Renew = %+v, %v; want a 10-minute TTL", renewed, err)
	}
	if _, err := c.GetLease(t.Context(), "01ARZ3NDEKTSV4RRFFQ69G5FAV"); !errors.Is(err, client.ErrLeaseNotFound) {
		t.Fatalf("GetLease of an unknown id = %v", err)
	}
	if _, err := c.Renew(t.Context(), "not-a-ulid", 0); !errors.Is(err, client.ErrInvalidRequest) {
		t.Fatalf("Renew of a malformed id = %v", err)
	}
}

func lastHolder(t *testing.T, c *client.Client, limit string) string {
	ws, err := c.Waiters(t.Context(), limit)
	if err != nil || len(ws) == 0 {
		return ""
	}
	return ws[len(ws)-1].Holder
}

func TestErrorsMatchCodes(t *testing.T) {
	t.Parallel()
	_, c := mustStart(t)
	_, err := c.GetLimit(t.Context(), "missing")
	if !errors.Is(err, client.ErrLimitNotFound) {
		t.Fatalf("err = %v, want ErrLimitNotFound", err)
	}
	if errors.Is(err, client.ErrLeaseNotFound) || errors.Is(err, client.ErrNotFound) {
		t.Fatalf("err = %v matches other 404 codes", err)
	}
	var le *limitd.Error
	if !errors.As(err, &le) || le.Code != limitd.CodeLimitNotFound || !strings.Contains(le.Message, "missing") {
		t.Fatalf("errors.As *limitd.Error = %+v", le)
	}
	if !errors.Is(err, &limitd.Error{Code: limitd.CodeLimitNotFound}) {
		t.Fatal("errors.Is with a *limitd.Error target fails")
	}
	// Sentinels compare with each other and with *limitd.Error both ways.
	if !errors.Is(client.ErrNoSlots, client.ErrNoSlots) || errors.Is(client.ErrNoSlots, client.ErrQueueFull) {
		t.Fatal("sentinel against sentinel")
	}
	if !errors.Is(client.ErrNoSlots, &limitd.Error{Code: limitd.CodeNoSlots}) {
		t.Fatal("sentinel against *limitd.Error")
	}
	if client.ErrNoSlots.Code() != limitd.CodeNoSlots {
		t.Fatal("Code")
	}
	// Every code of the API has a sentinel that matches it.
	sentinels := map[limitd.Code]client.Sentinel{}
	for _, s := range []client.Sentinel{client.ErrInvalidRequest, client.ErrUnauthorized, client.ErrForbidden,
		client.ErrLimitNotFound, client.ErrLeaseNotFound, client.ErrNotFound, client.ErrMethodNotAllowed,
		client.ErrSlotsExceedCapacity, client.ErrSuperseded, client.ErrBodyTooLarge, client.ErrNoSlots,
		client.ErrQueueFull, client.ErrShuttingDown, client.ErrStarting, client.ErrStoreUnavailable, client.ErrInternal} {
		sentinels[s.Code()] = s
	}
	for _, code := range limitd.Codes() {
		s, ok := sentinels[code]
		if !ok {
			t.Errorf("no sentinel for code %q", code)
			continue
		}
		if !errors.Is(error(&limitd.Error{Code: code}), s) {
			t.Errorf("errors.Is(&limitd.Error{%q}, %v) is false", code, s)
		}
	}
}

// Answers that are not problem+json (a proxy's error page) still become
// *limitd.Error, with a code that fits the status.
func TestNonProblemErrors(t *testing.T) {
	t.Parallel()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/limits/gone":
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, "404 page not found")
		default:
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, "<html>oops</html>")
		}
	}))
	defer hs.Close()
	c := mustClient(t, hs.URL)
	_, err := c.GetLimit(t.Context(), "gone")
	if !errors.Is(err, client.ErrNotFound) || !strings.Contains(err.Error(), "404") {
		t.Fatalf("plain 404 = %v, want ErrNotFound naming the status", err)
	}
	_, err = c.ListLimits(t.Context())
	if !errors.Is(err, client.ErrInternal) || !strings.Contains(err.Error(), "oops") {
		t.Fatalf("HTML 500 = %v, want ErrInternal with the body", err)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"127.0.0.1:7070", "ftp://x", "http://", "http://h/?q=1", "http://h/#f", "://"} {
		if _, err := client.New(bad); err == nil {
			t.Errorf("New(%q) succeeded", bad)
		}
	}
	c, err := client.New("")
	if err != nil || c.URL() != client.DefaultURL {
		t.Fatalf("New(\"\") = %v, %v; want %s", c, err, client.DefaultURL)
	}
	if !strings.HasPrefix(c.Holder(), strings.Split(client.DefaultHolder(), "/")[0]) || !strings.Contains(c.Holder(), "/pid-") {
		t.Errorf("default holder %q", c.Holder())
	}
	if _, err := client.New("http://h", client.WithHolder(strings.Repeat("x", 300))); err == nil {
		t.Error("a 300-character holder was accepted")
	}
}

// The token goes in a Bearer header, and a base URL's path prefix (a
// server behind a gateway) is kept.
func TestTokenAndPathPrefix(t *testing.T) {
	t.Parallel()
	srv, _ := mustStart(t)
	p := newProxy(t, srv.URL)
	var mu sync.Mutex
	var auth []string
	mux := http.NewServeMux()
	mux.Handle("/gw/", http.StripPrefix("/gw", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		p.forward(w, r)
	})))
	gw := httptest.NewServer(mux)
	defer gw.Close()

	c := mustClient(t, gw.URL+"/gw/", client.WithToken("s3cret"))
	mustPutLimit(t, c, "via-gateway", 1)
	if err := c.Do(t.Context(), "via-gateway", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(auth) != 3 {
		t.Fatalf("%d requests through the gateway, want 3 (put, acquire, release)", len(auth))
	}
	for _, a := range auth {
		if a != "Bearer s3cret" {
			t.Fatalf("Authorization = %q", a)
		}
	}
}
