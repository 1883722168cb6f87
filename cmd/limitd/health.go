package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"strings"
	"time"
)

// "limitd health" exists because the container image (distroless) has no
// curl or wget: Docker's HEALTHCHECK runs the binary against itself. So with
// no --server and no LIMITD_URL it finds the server the way the server finds
// its own address, from LIMITD_ADDR, which the image sets to 0.0.0.0:7070.

// defaultHealthURL is where a server started without flags listens.
const defaultHealthURL = "http://127.0.0.1:7070"

// healthTarget is where health connects and how it trusts the server.
type healthTarget struct {
	url string
	// serverCertFile, when set, is the server's own --tls-cert: a URL derived
	// from LIMITD_ADDR names 127.0.0.1, which the certificate does not, so
	// health checks that the server presents exactly that certificate.
	serverCertFile string
}

// resolveHealthTarget picks the URL: --server, else LIMITD_URL, else the
// server's own LIMITD_ADDR (https when LIMITD_TLS_CERT is set), else the
// default address.
func resolveHealthTarget(server string, getenv func(string) string) (healthTarget, error) {
	if server != "" {
		return healthTarget{url: server}, nil
	}
	if u := getenv("LIMITD_URL"); u != "" {
		return healthTarget{url: u}, nil
	}
	addr := getenv("LIMITD_ADDR")
	if addr == "" {
		return healthTarget{url: defaultHealthURL}, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return healthTarget{}, fmt.Errorf("LIMITD_ADDR=%q must be host:port: %v", addr, err)
	}
	// A server listening on every interface is reachable on loopback, and
	// loopback needs no route, no DNS and no firewall rule.
	switch ip := net.ParseIP(host); {
	case host == "":
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified() && ip.To4() != nil:
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified():
		host = "::1"
	}
	t := healthTarget{url: "http://" + net.JoinHostPort(host, port)}
	if cert := getenv("LIMITD_TLS_CERT"); cert != "" {
		t.url = "https://" + net.JoinHostPort(host, port)
		t.serverCertFile = cert
	}
	return t, nil
}

// pinnedTLS trusts exactly the certificates of the server's own certificate
// file, whatever host name they carry: they are the ones this server was
// configured to present, so a match proves we reached it.
func pinnedTLS(certFile string) (*tls.Config, error) {
	data, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("reading the server certificate (LIMITD_TLS_CERT): %w", err)
	}
	var leaf []byte
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type == "CERTIFICATE" {
			leaf = block.Bytes
			break
		}
	}
	if leaf == nil {
		return nil, fmt.Errorf("LIMITD_TLS_CERT %s holds no PEM certificate", certFile)
	}
	if _, err := x509.ParseCertificate(leaf); err != nil {
		return nil, fmt.Errorf("LIMITD_TLS_CERT %s: %w", certFile, err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The usual chain and host name checks would fail against 127.0.0.1;
		// VerifyConnection below does the check that matters instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, leaf) {
				return errors.New("the server did not present the certificate of LIMITD_TLS_CERT")
			}
			return nil
		},
	}, nil
}

func runHealth(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("limitd health", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	server := fs.String("server", "", "limitd server URL (default: env LIMITD_URL, else the server's own LIMITD_ADDR, else "+defaultHealthURL+")")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	quiet := fs.Bool("q", false, "print nothing when the server is alive")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: limitd health [flags]\n\nExits 0 when GET /healthz answers 200, 1 otherwise (for Docker's HEALTHCHECK and scripts).\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return parseError(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "limitd health: unexpected arguments %q\n", fs.Args())
		return errUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(e.stderr, "limitd health: --timeout %v must be positive\n", *timeout)
		return errUsage
	}
	target, err := resolveHealthTarget(*server, e.getenv)
	if err != nil {
		return err
	}
	url := strings.TrimRight(target.url, "/") + "/healthz"

	transport := http.DefaultTransport.(*http.Transport).Clone()
	if target.serverCertFile != "" {
		cfg, err := pinnedTLS(target.serverCertFile)
		if err != nil {
			return err
		}
		transport.TLSClientConfig = cfg
	}
	defer transport.CloseIdleConnections()
	hc := &http.Client{
		Transport: transport,
		Timeout:   *timeout,
		// A redirect would make "alive" mean some other server is alive.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("bad server URL %q: %w", target.url, err)
	}
	req.Header.Set("User-Agent", "limitd-health/"+version)
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("GET %s: no answer within %v", url, *timeout)
		}
		// *url.Error repeats the method and URL; say them once.
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	// Enough of the body to show a problem's detail, never a flood.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		msg := strings.Join(strings.Fields(string(body)), " ")
		if msg == "" {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, msg)
	}
	if !*quiet {
		fmt.Fprintf(e.stdout, "ok: %s answered %s\n", url, resp.Status)
	}
	return nil
}
