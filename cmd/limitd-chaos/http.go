package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"time"
)

// The tool speaks HTTP with its own small helpers and its own copies of the
// wire types, so that it depends neither on the client package nor on the
// server's types: the checker must judge the server by what travels on the
// wire.

type wireLease struct {
	ID        string    `json:"id"`
	Limit     string    `json:"limit"`
	Slots     int       `json:"slots"`
	Holder    string    `json:"holder"`
	Fence     uint64    `json:"fence"`
	ExpiresAt time.Time `json:"expires_at"`
}

type wireLimit struct {
	Name     string `json:"name"`
	Capacity int    `json:"capacity"`
	InUse    int    `json:"in_use"`
	Waiting  int    `json:"waiting"`
}

type wireLimits struct {
	Limits []wireLimit `json:"limits"`
}

type wireLeases struct {
	Leases []wireLease `json:"leases"`
}

type wireWaiters struct {
	Waiters []struct {
		Position int    `json:"position"`
		Slots    int    `json:"slots"`
		Holder   string `json:"holder"`
		// WaitingSince is kept as sent: with the holder it names a waiter.
		WaitingSince string `json:"waiting_since"`
	} `json:"waiters"`
}

// httpClient is one chaos client's connection to the server, with a
// transport of its own as a separate worker process would have.
type httpClient struct {
	base string
	hc   *http.Client
}

func newHTTPClient(base string) *httpClient {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     30 * time.Second,
	}
	return &httpClient{base: base, hc: &http.Client{Transport: tr}}
}

func (c *httpClient) close() { c.hc.CloseIdleConnections() }

// answer is the result of one request.
type answer struct {
	status int
	code   string // the problem's code on an error status
	body   []byte
	err    error
}

// outcome classifies the answer by what it proves about the request's effect.
func (a answer) outcome() Outcome {
	switch {
	case a.err != nil || a.status >= 500:
		return Unknown
	case a.status >= 200 && a.status < 300:
		return OK
	case a.status == http.StatusNotFound:
		return NotFound
	}
	return Refused
}

// do sends one request; timeout bounds it on top of ctx.
func (c *httpClient) do(ctx context.Context, method, path string, body any, key string, timeout time.Duration) answer {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return answer{err: err}
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return answer{err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, body: data, err: err}
	if err == nil && resp.StatusCode >= 400 {
		var p struct {
			Code string `json:"code"`
		}
		if json.Unmarshal(data, &p) == nil {
			a.code = p.Code
		}
	}
	return a
}

// decode fills out from a successful answer's body; a body that does not
// decode makes the answer an unknown outcome.
func (a *answer) decode(out any) bool {
	if a.err != nil {
		return false
	}
	if err := json.Unmarshal(a.body, out); err != nil {
		a.err = err
		return false
	}
	return true
}
