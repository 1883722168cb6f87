package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"time"
)

// worker is one client with one keep-alive connection of its own, as a
// real worker process would have.
type worker struct {
	base   string
	client *http.Client
}

func newWorker(base string) *worker {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		IdleConnTimeout:     time.Minute,
	}
	return &worker{base: base, client: &http.Client{Transport: tr}}
}

func (w *worker) close() { w.client.CloseIdleConnections() }

type lease struct {
	ID    string `json:"id"`
	Fence uint64 `json:"fence"`
}

// do sends one request and decodes a JSON answer into out (when not nil).
func (w *worker) do(ctx context.Context, method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, w.base+path, rd)
	if err != nil {
		return 0, err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

func (w *worker) putLimit(ctx context.Context, name string, capacity int) error {
	code, err := w.do(ctx, "PUT", "/v1/limits/"+name, map[string]any{"capacity": capacity}, nil)
	if err == nil && code >= 300 {
		err = fmt.Errorf("PUT %s: status %d", name, code)
	}
	return err
}

// acquire long-polls until it holds a lease, asking again after each 423.
func (w *worker) acquire(ctx context.Context, name string, ttl float64) (lease, error) {
	for {
		var l lease
		code, err := w.do(ctx, "POST", "/v1/limits/"+name+"/acquire", map[string]any{"ttl_seconds": ttl, "wait_seconds": 60}, &l)
		if err != nil {
			return l, err
		}
		switch code {
		case http.StatusCreated, http.StatusOK:
			return l, nil
		case http.StatusLocked:
			continue
		default:
			return l, fmt.Errorf("acquire %s: status %d", name, code)
		}
	}
}

func (w *worker) release(ctx context.Context, id string) error {
	code, err := w.do(ctx, "DELETE", "/v1/leases/"+id, nil, nil)
	if err == nil && code != http.StatusNoContent {
		err = fmt.Errorf("release %s: status %d", id, code)
	}
	return err
}

// percentiles of a sample of durations, in microseconds.
func percentiles(d []time.Duration, ps ...float64) map[string]float64 {
	out := make(map[string]float64)
	if len(d) == 0 {
		return out
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	for _, p := range ps {
		i := int(p/100*float64(len(s)-1) + 0.5)
		out[fmt.Sprintf("p%g_us", p)] = float64(s[i].Nanoseconds()) / 1e3
	}
	return out
}
