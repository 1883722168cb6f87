package api_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/daemon"
	"github.com/limitd/limitd/internal/servertest"
)

// logSink collects the JSON log lines of a server and lets a test wait for
// a line instead of guessing how long its writing takes.
type logSink struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	lines   []map[string]any
	written chan struct{} // closed and replaced on every line
}

func newLogSink() *logSink { return &logSink{written: make(chan struct{})} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	for {
		line, err := s.buf.ReadBytes('\n')
		if err != nil {
			// A partial line stays for the next write.
			s.buf.Reset()
			s.buf.Write(line)
			break
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			m = map[string]any{"unparsable": string(line)}
		}
		s.lines = append(s.lines, m)
	}
	close(s.written)
	s.written = make(chan struct{})
	return len(p), nil
}

// option makes the server log to the sink, in JSON, at info.
func (s *logSink) option() servertest.Option {
	return func(c *daemon.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(s, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
}

// all returns the lines written so far that match.
func (s *logSink) all(match func(map[string]any) bool) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range s.lines {
		if match(l) {
			out = append(out, l)
		}
	}
	return out
}

// await returns the first line that matches, waiting up to 5 s for it.
func (s *logSink) await(tb testing.TB, what string, match func(map[string]any) bool) map[string]any {
	tb.Helper()
	timeout := time.After(5 * time.Second)
	for {
		s.mu.Lock()
		for _, l := range s.lines {
			if match(l) {
				s.mu.Unlock()
				return l
			}
		}
		written := s.written
		s.mu.Unlock()
		select {
		case <-written:
		case <-timeout:
			tb.Fatalf("no log line %s within 5s; the log:\n%s", what, s.dump())
			return nil
		}
	}
}

func (s *logSink) dump() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, l := range s.lines {
		data, _ := json.Marshal(l)
		b.Write(data)
		b.WriteByte('\n')
	}
	return b.String()
}

func msgIs(msg string) func(map[string]any) bool {
	return func(l map[string]any) bool { return l["msg"] == msg }
}

func requestLine(id string) func(map[string]any) bool {
	return func(l map[string]any) bool { return l["msg"] == "request" && l["request_id"] == id }
}
