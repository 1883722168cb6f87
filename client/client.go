// Package client is the Go client of limitd: it acquires slots of named
// concurrency limits from a limitd server, keeps the resulting leases alive
// while the work runs, and offers the admin calls of the HTTP API.
//
// The usual way in is Do, which acquires a slot, runs a function while the
// lease renews itself in the background, and releases the slot afterwards:
//
//	c, err := client.New("http://limitd.internal:7070", client.WithToken(token))
//	// or client.FromEnv(): LIMITD_URL and LIMITD_TOKEN, as the CLI reads them
//	...
//	err = c.Do(ctx, "payments-api", func(ctx context.Context) error {
//		return callPaymentsAPI(ctx) // at most capacity of these run at once
//	})
//
// Acquire waits with long-polls, so a freed slot is handed over at once
// instead of being noticed at the next retry; network errors and 503s are
// retried with backoff under one Idempotency-Key, so a retry never takes a
// second lease. Errors from the server are *limitd.Error values with the
// API's stable codes; compare them with errors.Is and the Err constants of
// this package (errors.Is(err, client.ErrLimitNotFound)).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/limitd/limitd"
)

// DefaultURL is the server New talks to when given an empty base URL: the
// address a limitd server listens on unless told otherwise.
const DefaultURL = "http://127.0.0.1:7070"

// Backoff bounds for retrying network errors and 503s, unless changed with
// WithRetryBackoff.
const (
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 5 * time.Second
)

// maxPoll is the longest single long-poll. Shorter than any server's maximum
// wait (300 s by default) and than the idle timeouts of common proxies, so a
// long wait is a chain of polls that each end with an answer.
const maxPoll = 60 * time.Second

// pollGrace is how much longer than wait_seconds a long-poll may take before
// the client gives up on the connection. The server answers within
// wait_seconds + 1 s; anything slower is a dead connection or a hung proxy.
const pollGrace = 10 * time.Second

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// Client talks to one limitd server. It is safe for concurrent use.
type Client struct {
	base       *url.URL
	hc         *http.Client
	token      string
	holder     string
	minBackoff time.Duration
	maxBackoff time.Duration
	log        *slog.Logger
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client send its requests with hc. Long-polls
// last up to a minute, so hc.Timeout should be 0 (deadlines come from the
// contexts of the calls); a shorter positive Timeout makes each long-poll
// at most half of it.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.hc = hc
		}
	}
}

// WithToken sends token as "Authorization: Bearer TOKEN" on every request.
func WithToken(token string) Option {
	return func(c *Client) { c.token = token }
}

// WithHolder sets the holder name shown in leases and waiters, which admins
// use to see who holds a slot. The default is "HOSTNAME/pid-PID".
func WithHolder(holder string) Option {
	return func(c *Client) { c.holder = holder }
}

// WithLogger makes the client report what it otherwise handles silently:
// retries of acquires and releases (Warn), failed renewals (Warn) and lost
// leases (Error). The default discards them.
func WithLogger(l *slog.Logger) Option {
	return func(c *Client) {
		if l != nil {
			c.log = l
		}
	}
}

// WithRetryBackoff sets the bounds of the exponential backoff between
// retries of network errors and 503 answers (defaults: DefaultMinBackoff,
// DefaultMaxBackoff). Each pause is drawn at random up to the current bound
// ("full jitter") and added to the server's Retry-After.
func WithRetryBackoff(minBackoff, maxBackoff time.Duration) Option {
	return func(c *Client) {
		if minBackoff > 0 {
			c.minBackoff = minBackoff
		}
		if maxBackoff >= c.minBackoff {
			c.maxBackoff = maxBackoff
		}
	}
}

// New returns a client of the limitd server at baseURL (for example
// "http://127.0.0.1:7070"; a path prefix such as "https://gw/limitd" is
// kept). An empty baseURL means DefaultURL.
func New(baseURL string, opts ...Option) (*Client, error) {
	if baseURL == "" {
		baseURL = DefaultURL
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("limitd: server URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("limitd: server URL %q: want http:// or https:// and a host", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("limitd: server URL %q: must not have a query or fragment", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	c := &Client{
		base:       u,
		hc:         &http.Client{},
		holder:     DefaultHolder(),
		minBackoff: DefaultMinBackoff,
		maxBackoff: DefaultMaxBackoff,
		log:        slog.New(slog.DiscardHandler),
	}
	for _, opt := range opts {
		opt(c)
	}
	if err := (limitd.AcquireRequest{Holder: c.holder}).Validate(limitd.MaxTTLCeiling); err != nil {
		return nil, fmt.Errorf("limitd: holder: %w", err)
	}
	return c, nil
}

// FromEnv returns a client configured from the environment, as the limitd
// CLI is: the server from LIMITD_URL (DefaultURL when unset or empty) and
// the bearer token from LIMITD_TOKEN (none when unset or empty). opts apply
// after the environment, so WithToken overrides LIMITD_TOKEN.
func FromEnv(opts ...Option) (*Client, error) {
	var env []Option
	if token := os.Getenv("LIMITD_TOKEN"); token != "" {
		env = append(env, WithToken(token))
	}
	c, err := New(os.Getenv("LIMITD_URL"), append(env, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("%w (from LIMITD_URL)", err)
	}
	return c, nil
}

// Holder is the holder name the client puts in its acquires.
func (c *Client) Holder() string { return c.holder }

// URL is the base URL of the server.
func (c *Client) URL() string { return c.base.String() }

// DefaultHolder is the holder name of a client without WithHolder:
// "HOSTNAME/pid-PID".
func DefaultHolder() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return fmt.Sprintf("%s/pid-%d", host, os.Getpid())
}

// pollCap is the longest long-poll the HTTP client lets through.
func (c *Client) pollCap() time.Duration {
	if t := c.hc.Timeout; t > 0 && t/2 < maxPoll {
		return t / 2
	}
	return maxPoll
}

// response is what the transport layer knows about an answer beyond the
// decoded body: the status (to tell retryable answers from final ones) and
// Retry-After.
type response struct {
	status     int
	retryAfter time.Duration
}

// call sends one request and decodes a 2xx JSON answer into out (unless out
// is nil). Any other answer becomes a *limitd.Error. A transport failure is
// returned as is, with status 0.
func (c *Client) call(ctx context.Context, method, path string, hdr http.Header, in, out any) (response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return response{}, fmt.Errorf("limitd: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	u := *c.base
	u.Path += path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return response{}, fmt.Errorf("limitd: %w", err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", "limitd-go-client")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	r := response{status: resp.StatusCode, retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if out == nil || resp.StatusCode == http.StatusNoContent {
			// Drain so the connection can be reused.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
			return r, nil
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return r, fmt.Errorf("limitd: %s %s: decode %d response: %w", method, path, resp.StatusCode, err)
		}
		return r, nil
	}
	return r, decodeError(resp, r.retryAfter)
}

// decodeError turns an error response into a *limitd.Error. A problem+json
// body carries the code; anything else (a proxy's HTML page, say) gets the
// code that matches its status, and the status and a snippet as message.
func decodeError(resp *http.Response, retryAfter time.Duration) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	ra := int((retryAfter + time.Second - 1) / time.Second)
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/problem+json" || mt == "application/json" {
		var p limitd.Problem
		if json.Unmarshal(b, &p) == nil && p.Code != "" {
			msg := p.Detail
			if msg == "" {
				msg = p.Title
			}
			return &limitd.Error{Code: p.Code, Message: msg, RetryAfter: ra}
		}
	}
	snippet := strings.TrimSpace(string(b))
	if len(snippet) > 200 {
		snippet = snippet[:200] + "…"
	}
	msg := fmt.Sprintf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	if snippet != "" {
		msg += ": " + snippet
	}
	return &limitd.Error{Code: codeForStatus(resp.StatusCode), Message: msg, RetryAfter: ra}
}

func codeForStatus(status int) limitd.Code {
	switch status {
	case http.StatusBadRequest:
		return limitd.CodeInvalidRequest
	case http.StatusUnauthorized:
		return limitd.CodeUnauthorized
	case http.StatusForbidden:
		return limitd.CodeForbidden
	case http.StatusNotFound:
		return limitd.CodeNotFound
	case http.StatusMethodNotAllowed:
		return limitd.CodeMethodNotAllowed
	case http.StatusRequestEntityTooLarge:
		return limitd.CodeBodyTooLarge
	case http.StatusLocked:
		return limitd.CodeNoSlots
	}
	return limitd.CodeInternal
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(min(n, 3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(time.Until(t), 0), time.Hour)
	}
	return 0
}

// retryable reports whether a failed call may be sent again: transport
// errors and answers that say "not now" (503, and 502/504 from a proxy in
// front of a restarting server). The caller's own context ending is not.
func retryable(ctx context.Context, r response, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var le *limitd.Error
	if !errors.As(err, &le) {
		// A transport error: connection refused while the server restarts,
		// reset, or a long-poll's own deadline on a dead connection.
		return true
	}
	switch r.status {
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return true
	}
	return false
}
