package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/limitd/limitd"
	"github.com/limitd/limitd/internal/api"
	"github.com/limitd/limitd/internal/auth"
	"github.com/limitd/limitd/internal/daemon"
)

// This file is the security side of "limitd serve": tokens, TLS, the
// separate metrics listener, the refusal to serve a network without
// authentication, and SIGHUP reloads of tokens and certificates.

// securityConfig holds the security flags of serve.
type securityConfig struct {
	TokensFile     string
	MetricsAddr    string
	TLSCert        string
	TLSKey         string
	TLSClientCA    string
	InsecureNoAuth bool
}

func (c *securityConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&c.TokensFile, "tokens-file", c.TokensFile, "file of bearer tokens (NAME SCOPE PATTERN SHA256HEX per line); enables authentication; reloaded on SIGHUP")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, "serve /metrics on this address (plain HTTP, no token) instead of on --addr")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "PEM certificate (chain) file: serve HTTPS (TLS 1.2 or later); reloaded on SIGHUP")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "PEM private key file of --tls-cert")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", c.TLSClientCA, "PEM CA file: require client certificates signed by it (mutual TLS)")
	fs.BoolVar(&c.InsecureNoAuth, "insecure-no-auth", c.InsecureNoAuth, "allow serving a non-loopback --addr without --tokens-file")
}

// validate checks the security flags against the listen address.
func (c securityConfig) validate(addr string) error {
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("--tls-cert and --tls-key must be given together")
	case c.TLSClientCA != "" && c.TLSCert == "":
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key: client certificates are checked during the TLS handshake")
	case c.TokensFile != "" && c.InsecureNoAuth:
		return errors.New("--insecure-no-auth and --tokens-file contradict each other: give one of them")
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return fmt.Errorf("--metrics-addr %q must be host:port: %v", c.MetricsAddr, err)
		}
	}
	loopback, err := isLoopbackAddr(addr)
	if err != nil {
		return err
	}
	if !loopback && c.TokensFile == "" && !c.InsecureNoAuth {
		return fmt.Errorf("refusing to listen on --addr %s without authentication: it is not a loopback address "+
			"(127.0.0.0/8, ::1 or localhost), so anyone who can reach it could take, release and delete every limit's slots. "+
			"Give --tokens-file PATH (make tokens with \"limitd token new\"), "+
			"or --insecure-no-auth to serve without authentication anyway", addr)
	}
	return nil
}

// isLoopbackAddr reports whether a listen address stays on this machine. An
// empty host (":7070") and unspecified addresses (0.0.0.0, ::) listen on
// every interface; host names other than "localhost" may resolve anywhere.
func isLoopbackAddr(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("--addr %q must be host:port: %v", addr, err)
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// security is what serve runs of the security flags.
type security struct {
	cfg    securityConfig
	log    *slog.Logger
	tokens *auth.Keyring // nil: no authentication
	tls    *tlsFiles     // nil: plain HTTP

	metrics     *http.Server
	metricsOnce sync.Once
	stopHUP     func()
	closeOnce   sync.Once
}

// open loads the tokens file and the TLS files (a malformed file is an error
// that names its line) and starts listening for SIGHUP. Call close.
func (c securityConfig) open(log *slog.Logger) (*security, error) {
	s := &security{cfg: c, log: log}
	if c.TokensFile != "" {
		k, err := auth.OpenKeyring(c.TokensFile)
		if err != nil {
			return nil, err
		}
		s.tokens = k
		n := k.Set().Len()
		log.Info("authentication enabled", "tokens_file", c.TokensFile, "tokens", n)
		if n == 0 {
			log.Warn("the tokens file has no tokens: every API request will be answered 401 until one is added and limitd gets SIGHUP", "tokens_file", c.TokensFile)
		}
	} else if c.InsecureNoAuth {
		log.Warn("authentication is off (--insecure-no-auth): anyone who can reach limitd can change every limit")
	}
	if c.TLSCert != "" {
		t := &tlsFiles{cert: c.TLSCert, key: c.TLSKey, clientCA: c.TLSClientCA}
		if err := t.load(); err != nil {
			return nil, err
		}
		s.tls = t
		log.Info("TLS enabled", t.attrs()...)
	}
	s.stopHUP = s.watchSIGHUP()
	return s, nil
}

// listener wraps ln in TLS when it is configured. It must be the outermost
// wrapper, since net/http recognizes TLS connections by their type.
func (s *security) listener(ln net.Listener) net.Listener {
	if s.tls == nil {
		return ln
	}
	return tls.NewListener(ln, s.tls.serverConfig())
}

// handler is the main listener's handler: with --metrics-addr, /metrics is
// not served here.
func (s *security) handler(h http.Handler) http.Handler {
	if s.cfg.MetricsAddr == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			api.WriteProblem(w, r, limitd.Errorf(limitd.CodeNotFound, "metrics are served on the --metrics-addr listener, not here"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// startMetrics serves /metrics of h (and nothing else) on --metrics-addr.
func (s *security) startMetrics(h http.Handler) error {
	if s.cfg.MetricsAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("listening on --metrics-addr %s: %w", s.cfg.MetricsAddr, err)
	}
	only := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			api.WriteProblem(w, r, limitd.Errorf(limitd.CodeNotFound, "this listener serves only /metrics"))
			return
		}
		h.ServeHTTP(w, r)
	})
	s.metrics = daemon.NewHTTPServer(only, daemon.DefaultHTTPConfig(), s.log)
	go func() {
		if err := s.metrics.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics listener failed", "addr", s.cfg.MetricsAddr, "err", err)
		}
	}()
	s.log.Info("metrics listening", "addr", ln.Addr().String())
	return nil
}

// stopMetrics stops the metrics listener, giving a running scrape a moment.
func (s *security) stopMetrics() {
	s.metricsOnce.Do(func() {
		if s.metrics == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.metrics.Shutdown(ctx); err != nil {
			s.metrics.Close()
		}
	})
}

// close stops the metrics listener and the SIGHUP handling. It may be called
// more than once.
func (s *security) close() {
	s.stopMetrics()
	s.closeOnce.Do(s.stopHUP)
}

// watchSIGHUP reloads on every SIGHUP until the returned stop is called.
// SIGHUP is caught even when there is nothing to reload, because its
// default action would kill the daemon and every waiter with it.
func (s *security) watchSIGHUP() (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-ch:
				s.reload()
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
		<-finished
	}
}

// reload loads the tokens file and the TLS files again. A file that fails
// leaves its previous contents in force: a typo must not lock everybody out
// or take HTTPS down. Requests already admitted, waiters included, are not
// touched; new requests see the new tokens at once.
func (s *security) reload() {
	if s.tokens == nil && s.tls == nil {
		s.log.Info("SIGHUP: nothing to reload (no --tokens-file, no --tls-cert)")
		return
	}
	if s.tokens != nil {
		if set, err := s.tokens.Reload(); err != nil {
			s.log.Error("tokens file not reloaded: keeping the previous tokens", "err", err, "tokens", s.tokens.Set().Len())
		} else {
			s.log.Info("tokens reloaded", "tokens_file", s.tokens.Path(), "tokens", set.Len())
		}
	}
	if s.tls != nil {
		if err := s.tls.load(); err != nil {
			s.log.Error("TLS files not reloaded: keeping the previous certificate", "err", err)
		} else {
			s.log.Info("TLS certificate reloaded", s.tls.attrs()...)
		}
	}
}

// tlsFiles is the TLS configuration read from the flags' files. Every
// handshake takes the configuration in force, so a reload changes the
// certificate and client CAs for new connections without closing open ones.
type tlsFiles struct {
	cert, key, clientCA string
	current             atomic.Pointer[tls.Config]
}

func (t *tlsFiles) load() error {
	cert, err := tls.LoadX509KeyPair(t.cert, t.key)
	if err != nil {
		return fmt.Errorf("--tls-cert %s / --tls-key %s: %w", t.cert, t.key, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if t.clientCA != "" {
		pem, err := os.ReadFile(t.clientCA)
		if err != nil {
			return fmt.Errorf("--tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--tls-client-ca %s: no PEM certificate in it", t.clientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	t.current.Store(cfg)
	return nil
}

// serverConfig is the listener's configuration: it hands every handshake
// the configuration loaded last.
func (t *tlsFiles) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return t.current.Load(), nil
		},
	}
}

// attrs describe the certificate in force for the log.
func (t *tlsFiles) attrs() []any {
	cfg := t.current.Load()
	attrs := []any{"cert", t.cert, "mutual_tls", t.clientCA != ""}
	if leaf := cfg.Certificates[0].Leaf; leaf != nil {
		attrs = append(attrs, "subject", leaf.Subject.String(), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return attrs
}
