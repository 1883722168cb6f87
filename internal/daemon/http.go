package daemon

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// HTTPConfig bounds what slow or numerous clients can hold of the server.
type HTTPConfig struct {
	// ReadHeaderTimeout cuts clients that send headers slowly (slowloris).
	ReadHeaderTimeout time.Duration
	// ReadTimeout covers headers and body. It does not cut long-polls:
	// net/http clears the read deadline once the body has been read.
	ReadTimeout time.Duration
	// IdleTimeout closes keep-alive connections left unused.
	IdleTimeout time.Duration
	// MaxConns caps open connections; 0 means no cap beyond the process's
	// file descriptor limit. Connections over the cap wait in the kernel's
	// accept queue rather than being refused.
	MaxConns int
}

// DefaultHTTPConfig is what limitd serve uses unless told otherwise.
func DefaultHTTPConfig() HTTPConfig {
	return HTTPConfig{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
}

// NewHTTPServer returns the http.Server for handler. There is no write
// timeout: an acquire may legitimately wait minutes before it answers.
func NewHTTPServer(handler http.Handler, cfg HTTPConfig, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// LimitListener caps the connections accepted from ln at n at once (n <= 0
// returns ln itself).
func LimitListener(ln net.Listener, n int) net.Listener {
	if n <= 0 {
		return ln
	}
	return &limitListener{Listener: ln, sem: make(chan struct{}, n)}
}

type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
