package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// memServer is the baseline the HTTP scenarios are measured against in the
// same run, in a process of its own (see startBaseline): a semaphore per
// limit behind the same routes, in memory, with no durability, no leases,
// no expiry, no metrics and no logs — the cost of the HTTP round trips
// alone. limitd's figures divided by its figures say what limitd's
// guarantees cost.
type memServer struct {
	srv *http.Server

	mu     sync.Mutex
	limits map[string]chan struct{}
	seq    atomic.Uint64
}

// serveBaseline is the -baseline-server mode: memServer on addr until
// SIGTERM.
func serveBaseline(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	m := startMemServer(ln)
	<-ctx.Done()
	m.stop()
	return nil
}

func startMemServer(ln net.Listener) *memServer {
	m := &memServer{limits: make(map[string]chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/limits/{name}", m.put)
	mux.HandleFunc("POST /v1/limits/{name}/acquire", m.acquire)
	mux.HandleFunc("DELETE /v1/leases/{id}", m.release)
	mux.HandleFunc("GET /readyz", func(http.ResponseWriter, *http.Request) {})
	m.srv = &http.Server{Handler: mux}
	go m.srv.Serve(ln)
	return m
}

func (m *memServer) stop() { m.srv.Close() }

func (m *memServer) put(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Capacity int `json:"capacity"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	m.mu.Lock()
	m.limits[r.PathValue("name")] = make(chan struct{}, body.Capacity)
	m.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
}

func (m *memServer) sem(name string) chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.limits[name]
}

func (m *memServer) acquire(w http.ResponseWriter, r *http.Request) {
	var body struct {
		WaitSeconds float64 `json:"wait_seconds"`
		TTLSeconds  float64 `json:"ttl_seconds"`
	}
	json.NewDecoder(r.Body).Decode(&body)
	name := r.PathValue("name")
	sem := m.sem(name)
	if sem == nil {
		http.Error(w, "no such limit", http.StatusNotFound)
		return
	}
	timer := time.NewTimer(time.Duration(body.WaitSeconds * float64(time.Second)))
	defer timer.Stop()
	select {
	case sem <- struct{}{}:
	case <-timer.C:
		w.WriteHeader(http.StatusLocked)
		return
	case <-r.Context().Done():
		return
	}
	id := name + "~" + strconv.FormatUint(m.seq.Add(1), 10)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"id":%q,"fence":%d}`, id, m.seq.Load())
}

func (m *memServer) release(w http.ResponseWriter, r *http.Request) {
	name, _, _ := strings.Cut(r.PathValue("id"), "~")
	sem := m.sem(name)
	if sem == nil {
		http.Error(w, "no such lease", http.StatusNotFound)
		return
	}
	<-sem
	w.WriteHeader(http.StatusNoContent)
}
