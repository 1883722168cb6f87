package main_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests run the built limitd binary: flags, signals, listeners and
// TLS handshakes are exercised exactly as an operator meets them. Every
// server listens on 127.0.0.1 only.

// secProc is a running limitd whose JSON log lines the test can wait for.
type secProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
	err    error // of Wait, once exited is closed

	mu      sync.Mutex
	stderr  strings.Builder
	lines   []map[string]any
	newLine chan struct{} // closed and replaced on every line
}

// secStart runs bin with args (and a private database and JSON logs) and
// waits until it logs "limitd ready".
func secStart(t *testing.T, bin string, args ...string) *secProc {
	t.Helper()
	p := secRun(t, bin, append([]string{"serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "limitd.db"),
		"--log-format", "json", "--log-level", "debug"}, args...)...)
	ready := p.waitLog("limitd ready", nil)
	p.addr, _ = ready["addr"].(string)
	return p
}

// secRun starts bin with exactly args and an environment without LIMITD_
// variables; it is stopped with SIGTERM when the test ends.
func secRun(t *testing.T, bin string, args ...string) *secProc {
	t.Helper()
	p := &secProc{t: t, exited: make(chan struct{}), newLine: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			var m map[string]any
			_ = json.Unmarshal(sc.Bytes(), &m)
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			if m != nil {
				p.lines = append(p.lines, m)
			}
			close(p.newLine)
			p.newLine = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() {
		<-scanned // Wait closes the pipe: read it all first
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			t.Errorf("limitd did not stop within 15s of SIGTERM")
		}
	})
	return p
}

// waitLog waits up to 10 s for a log line with message msg for which match
// (if not nil) is true, and returns it.
func (p *secProc) waitLog(msg string, match func(map[string]any) bool) map[string]any {
	p.t.Helper()
	return p.waitLogAfter(0, msg, match)
}

// mark is the number of log lines so far, for waitLogAfter.
func (p *secProc) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

func (p *secProc) waitLogAfter(from int, msg string, match func(map[string]any) bool) map[string]any {
	p.t.Helper()
	deadline := time.After(10 * time.Second)
	for i := from; ; {
		p.mu.Lock()
		for ; i < len(p.lines); i++ {
			if l := p.lines[i]; l["msg"] == msg && (match == nil || match(l)) {
				p.mu.Unlock()
				return l
			}
		}
		next := p.newLine
		p.mu.Unlock()
		select {
		case <-next:
		case <-p.exited:
			p.t.Fatalf("limitd exited (%v) before logging %q:\n%s", p.err, msg, p.logs())
		case <-deadline:
			p.t.Fatalf("limitd did not log %q within 10s:\n%s", msg, p.logs())
		}
	}
}

func (p *secProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

func (p *secProc) hup() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		p.t.Fatal(err)
	}
}

// stop sends SIGTERM and checks that limitd exits 0.
func (p *secProc) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.t.Fatal("limitd did not stop within 15s of SIGTERM")
	}
	if p.err != nil {
		p.t.Fatalf("limitd exited with %v:\n%s", p.err, p.logs())
	}
}

// secToken is a token and its tokens-file line.
type secToken struct{ name, scope, pattern, token string }

func (k secToken) line() string {
	sum := sha256.Sum256([]byte(k.token))
	return k.name + " " + k.scope + " " + k.pattern + " " + hex.EncodeToString(sum[:])
}

func secWriteTokens(t *testing.T, path string, toks ...secToken) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# limitd tokens, written by the test\n")
	for _, k := range toks {
		b.WriteString(k.line() + "\n")
	}
	// Written to a temporary name and renamed, as an operator's tools do,
	// so that a SIGHUP never reads half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type secResult struct {
	status int
	body   string
	proto  int
	tls    *tls.ConnectionState
}

func secDo(client *http.Client, method, url, token, body string) (secResult, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return secResult{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := client.Do(req)
	if err != nil {
		return secResult{}, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	return secResult{status: res.StatusCode, body: string(data), proto: res.ProtoMajor, tls: res.TLS}, err
}

func secMust(t *testing.T, client *http.Client, method, url, token, body string, want int) secResult {
	t.Helper()
	r, err := secDo(client, method, url, token, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	if r.status != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, r.status, r.body, want)
	}
	return r
}

// secNoTokensIn fails if any token appears in limitd's output.
func secNoTokensIn(t *testing.T, p *secProc, toks ...secToken) {
	t.Helper()
	logs := p.logs()
	for _, k := range toks {
		if strings.Contains(logs, k.token) {
			t.Fatalf("the token of %s appears in the logs:\n%s", k.name, logs)
		}
	}
}

func TestBinaryRefusesNonLoopbackWithoutTokens(t *testing.T) {
	bin := e2eBuild(t)
	// Should the refusal ever break, limitd must still not listen on the
	// network: this test holds the port on 127.0.0.1, so binding 0.0.0.0
	// fails with "address already in use" instead.
	guard, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer guard.Close()
	port := fmt.Sprint(guard.Addr().(*net.TCPAddr).Port)
	dir := t.TempDir()

	for name, run := range map[string]func() *exec.Cmd{
		"Flag": func() *exec.Cmd {
			return exec.Command(bin, "serve", "--addr", "0.0.0.0:"+port, "--db", filepath.Join(dir, "a.db"))
		},
		"Env": func() *exec.Cmd {
			c := exec.Command(bin)
			c.Env = []string{"LIMITD_ADDR=0.0.0.0:" + port, "LIMITD_DB=" + filepath.Join(dir, "b.db")}
			return c
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := run()
			if c.Env == nil {
				c.Env = []string{}
			}
			var stderr strings.Builder
			c.Stderr = &stderr
			err := c.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1; stderr:\n%s", err, stderr.String())
			}
			msg := stderr.String()
			for _, want := range []string{"refusing to listen on --addr 0.0.0.0:" + port + " without authentication",
				"not a loopback address", "--tokens-file", "--insecure-no-auth"} {
				if !strings.Contains(msg, want) {
					t.Errorf("stderr does not say %q:\n%s", want, msg)
				}
			}
			if strings.Contains(msg, "address already in use") {
				t.Fatal("limitd tried to listen on 0.0.0.0")
			}
		})
	}
	for _, db := range []string{"a.db", "b.db"} {
		if _, err := os.Stat(filepath.Join(dir, db)); err == nil {
			t.Errorf("%s was created: limitd got past the refusal", db)
		}
	}
}

func TestBinaryMalformedTokensFileAtStart(t *testing.T) {
	bin := e2eBuild(t)
	path := filepath.Join(t.TempDir(), "tokens")
	good := secToken{"ops", "admin", "*", "limitd_ops-token"}
	if err := os.WriteFile(path, []byte(good.line()+"\netl worker team-a:* limitd_raw-token-pasted-here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := secRun(t, bin, "serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "limitd.db"), "--tokens-file", path)
	<-p.exited
	var exit *exec.ExitError
	if !errors.As(p.err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1:\n%s", p.err, p.logs())
	}
	if logs := p.logs(); !strings.Contains(logs, path+": line 2: ") || strings.Contains(logs, "limitd_raw-token") {
		t.Fatalf("stderr should name line 2 and not quote it:\n%s", logs)
	}
}

// TestBinarySIGHUPReloadsTokensWhileWaitersWait adds and revokes tokens,
// and tries a malformed file, while a long-poll waits: the waiter is
// neither dropped nor disturbed, and the token set changes at once.
func TestBinarySIGHUPReloadsTokensWhileWaitersWait(t *testing.T) {
	bin := e2eBuild(t)
	ops := secToken{"ops", "admin", "*", "limitd_ops-token-0123456789"}
	etl := secToken{"etl-a", "worker", "team-a:*", "limitd_etl-token-0123456789"}
	old := secToken{"old-a", "worker", "team-a:*", "limitd_old-token-0123456789"}
	added := secToken{"new-a", "worker", "team-a:*", "limitd_new-token-0123456789"}
	path := filepath.Join(t.TempDir(), "tokens")
	secWriteTokens(t, path, ops, etl, old)

	p := secStart(t, bin, "--tokens-file", path)
	base := "http://" + p.addr
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	secMust(t, client, "PUT", base+"/v1/limits/team-a:x", ops.token, `{"capacity": 1}`, 201)
	r := secMust(t, client, "POST", base+"/v1/limits/team-a:x/acquire", etl.token, `{"wait_seconds": 0}`, 201)
	var held struct{ ID string }
	if err := json.Unmarshal([]byte(r.body), &held); err != nil {
		t.Fatal(err)
	}

	waiter := make(chan secResult, 1)
	go func() {
		r, err := secDo(client, "POST", base+"/v1/limits/team-a:x/acquire", etl.token, `{"wait_seconds": 60, "holder": "waiter"}`)
		if err != nil {
			r.body = err.Error()
		}
		waiter <- r
	}()
	secWaitWaiting(t, client, base, ops.token, 1)

	secMust(t, client, "GET", base+"/v1/limits/team-a:x", added.token, "", 401)
	secMust(t, client, "GET", base+"/v1/limits/team-a:x", old.token, "", 200)

	// Add one token and revoke another.
	secWriteTokens(t, path, ops, etl, added)
	m := p.mark()
	p.hup()
	p.waitLogAfter(m, "tokens reloaded", func(l map[string]any) bool { return l["tokens"] == 3.0 })
	secMust(t, client, "GET", base+"/v1/limits/team-a:x", added.token, "", 200)
	secMust(t, client, "GET", base+"/v1/limits/team-a:x", old.token, "", 401)

	// A malformed file keeps the set in force and names the line.
	if err := os.WriteFile(path, []byte(ops.line()+"\n"+added.line()+"\nbroken line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m = p.mark()
	p.hup()
	failed := p.waitLogAfter(m, "tokens file not reloaded: keeping the previous tokens", nil)
	if e, _ := failed["err"].(string); !strings.Contains(e, "line 3") {
		t.Fatalf("the reload error does not name line 3: %v", failed)
	}
	secMust(t, client, "GET", base+"/v1/limits/team-a:x", added.token, "", 200)
	secMust(t, client, "GET", base+"/v1/limits/team-a:x", etl.token, "", 200)
	secMust(t, client, "GET", base+"/v1/limits/team-a:x", old.token, "", 401)

	// The waiter waited through both reloads and is served on release.
	select {
	case r := <-waiter:
		t.Fatalf("the waiter was answered during the reloads: %d %s", r.status, r.body)
	default:
	}
	secWaitWaiting(t, client, base, ops.token, 1)
	secMust(t, client, "DELETE", base+"/v1/leases/"+held.ID, etl.token, "", 204)
	select {
	case r := <-waiter:
		if r.status != 201 || !strings.Contains(r.body, `"holder":"waiter"`) {
			t.Fatalf("waiter: %d %s, want 201", r.status, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter was not granted within 10s of the release")
	}

	p.stop()
	secNoTokensIn(t, p, ops, etl, old, added)
	// The audit line is the API's at info; the slot events have their own
	// debug line of the same message, without a token.
	created := p.waitLog("limit created", func(l map[string]any) bool { return l["level"] == "INFO" })
	if created["token"] != "ops" || created["limit"] != "team-a:x" {
		t.Fatalf("the audit line does not name the token: %v", created)
	}
}

// secWaitWaiting polls the limit until it has n waiters (there is no event
// to wait on from outside the process), for at most 10 s.
func secWaitWaiting(t *testing.T, client *http.Client, base, token string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := secMust(t, client, "GET", base+"/v1/limits/team-a:x", token, "", 200)
		var l struct{ Waiting int }
		if err := json.Unmarshal([]byte(r.body), &l); err != nil {
			t.Fatal(err)
		}
		if l.Waiting == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("limit has %d waiters, want %d", l.Waiting, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---- TLS ---------------------------------------------------------------------

// secCA is a certificate authority made for one test.
type secCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func secNewCA(t *testing.T, name string) *secCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          secSerial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &secCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func secSerial(t *testing.T) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// issue makes a leaf certificate for 127.0.0.1 (server) or a client, and
// returns it with its key as PEM and as a tls.Certificate.
func (ca *secCA) issue(t *testing.T, name string, server bool) (certPEM, keyPEM []byte, pair tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: secSerial(t),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	pair, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM, pair
}

func secWriteFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// secTLSClient trusts roots and presents certs (if any).
func secTLSClient(roots *x509.CertPool, maxVersion uint16, certs ...tls.Certificate) *http.Client {
	return &http.Client{
		Timeout: 70 * time.Second,
		Transport: &http.Transport{
			// An explicit minimum, or Go's client would not even offer
			// versions below 1.2 and a server could not be tested on them.
			TLSClientConfig:   &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS10, MaxVersion: maxVersion},
			ForceAttemptHTTP2: true,
		},
	}
}

func secPool(cas ...*secCA) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca.cert)
	}
	return pool
}

func TestBinaryTLS(t *testing.T) {
	bin := e2eBuild(t)
	dir := t.TempDir()
	ca := secNewCA(t, "limitd test CA")
	certPEM, keyPEM, _ := ca.issue(t, "limitd-1", true)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	secWriteFile(t, certFile, certPEM)
	secWriteFile(t, keyFile, keyPEM)
	ops := secToken{"ops", "admin", "*", "limitd_tls-ops-token"}
	tokens := filepath.Join(dir, "tokens")
	secWriteTokens(t, tokens, ops)

	p := secStart(t, bin, "--tls-cert", certFile, "--tls-key", keyFile, "--tokens-file", tokens)
	base := "https://" + p.addr
	client := secTLSClient(secPool(ca), 0)
	defer client.CloseIdleConnections()

	t.Run("Handshake", func(t *testing.T) {
		r := secMust(t, client, "GET", base+"/readyz", "", "", 200)
		if r.tls == nil || r.tls.Version < tls.VersionTLS12 || r.tls.PeerCertificates[0].Subject.CommonName != "limitd-1" {
			t.Fatalf("TLS state: %+v", r.tls)
		}
		if r.proto != 2 {
			t.Errorf("HTTP/%d over TLS, want HTTP/2", r.proto)
		}
		secMust(t, client, "PUT", base+"/v1/limits/tls:x", ops.token, `{"capacity": 1}`, 201)
		secMust(t, client, "GET", base+"/v1/limits/tls:x", "", "", 401)
	})
	t.Run("TLS11Refused", func(t *testing.T) {
		old := secTLSClient(secPool(ca), tls.VersionTLS11)
		defer old.CloseIdleConnections()
		_, err := secDo(old, "GET", base+"/readyz", "", "")
		if err == nil || !strings.Contains(err.Error(), "protocol version") {
			t.Fatalf("a TLS 1.1 client: %v, want the server's protocol version alert", err)
		}
	})
	t.Run("UntrustedServerRefused", func(t *testing.T) {
		other := secTLSClient(secPool(secNewCA(t, "other CA")), 0)
		defer other.CloseIdleConnections()
		if _, err := secDo(other, "GET", base+"/readyz", "", ""); err == nil {
			t.Fatal("a client that does not trust the CA connected")
		}
	})
	t.Run("PlainHTTPRefused", func(t *testing.T) {
		plain := &http.Client{Transport: &http.Transport{}}
		defer plain.CloseIdleConnections()
		if r, err := secDo(plain, "GET", "http://"+p.addr+"/readyz", "", ""); err == nil && r.status == 200 {
			t.Fatal("plain HTTP was served")
		}
	})
	t.Run("ReloadCertificateKeepsWaiter", func(t *testing.T) {
		r := secMust(t, client, "POST", base+"/v1/limits/tls:x/acquire", ops.token, `{"wait_seconds": 0}`, 201)
		var held struct{ ID string }
		if err := json.Unmarshal([]byte(r.body), &held); err != nil {
			t.Fatal(err)
		}
		waiter := make(chan secResult, 1)
		go func() {
			r, err := secDo(client, "POST", base+"/v1/limits/tls:x/acquire", ops.token, `{"wait_seconds": 60}`)
			if err != nil {
				r.body = err.Error()
			}
			waiter <- r
		}()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(secMust(t, client, "GET", base+"/v1/limits/tls:x", ops.token, "", 200).body, `"waiting":1`) {
			if time.Now().After(deadline) {
				t.Fatal("the waiter did not queue")
			}
			time.Sleep(10 * time.Millisecond)
		}

		// A broken certificate file is refused and the old one kept.
		secWriteFile(t, certFile, []byte("not a certificate"))
		m := p.mark()
		p.hup()
		p.waitLogAfter(m, "TLS files not reloaded: keeping the previous certificate", nil)
		fresh := secTLSClient(secPool(ca), 0)
		if r := secMust(t, fresh, "GET", base+"/readyz", "", "", 200); r.tls.PeerCertificates[0].Subject.CommonName != "limitd-1" {
			t.Fatalf("certificate after a failed reload: %s", r.tls.PeerCertificates[0].Subject)
		}
		fresh.CloseIdleConnections()

		// A new certificate is served to new connections.
		certPEM2, keyPEM2, _ := ca.issue(t, "limitd-2", true)
		secWriteFile(t, keyFile, keyPEM2)
		secWriteFile(t, certFile, certPEM2)
		m = p.mark()
		p.hup()
		p.waitLogAfter(m, "TLS certificate reloaded", nil)
		fresh = secTLSClient(secPool(ca), 0)
		defer fresh.CloseIdleConnections()
		if r := secMust(t, fresh, "GET", base+"/readyz", "", "", 200); r.tls.PeerCertificates[0].Subject.CommonName != "limitd-2" {
			t.Fatalf("certificate after the reload: %s, want limitd-2", r.tls.PeerCertificates[0].Subject)
		}

		select {
		case r := <-waiter:
			t.Fatalf("the waiter was answered during the reload: %d %s", r.status, r.body)
		default:
		}
		secMust(t, fresh, "DELETE", base+"/v1/leases/"+held.ID, ops.token, "", 204)
		select {
		case r := <-waiter:
			if r.status != 201 {
				t.Fatalf("waiter: %d %s, want 201", r.status, r.body)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the waiter was not granted within 10s of the release")
		}
	})
	p.stop()
	secNoTokensIn(t, p, ops)
}

func TestBinaryMutualTLS(t *testing.T) {
	bin := e2eBuild(t)
	dir := t.TempDir()
	serverCA := secNewCA(t, "server CA")
	clientCA := secNewCA(t, "client CA")
	rogueCA := secNewCA(t, "rogue CA")
	certPEM, keyPEM, _ := serverCA.issue(t, "limitd", true)
	files := map[string][]byte{"cert.pem": certPEM, "key.pem": keyPEM, "clients.pem": clientCA.pem}
	for name, data := range files {
		secWriteFile(t, filepath.Join(dir, name), data)
	}
	ops := secToken{"ops", "admin", "*", "limitd_mtls-ops-token"}
	tokens := filepath.Join(dir, "tokens")
	secWriteTokens(t, tokens, ops)

	p := secStart(t, bin, "--tls-cert", filepath.Join(dir, "cert.pem"), "--tls-key", filepath.Join(dir, "key.pem"),
		"--tls-client-ca", filepath.Join(dir, "clients.pem"), "--tokens-file", tokens)
	base := "https://" + p.addr
	roots := secPool(serverCA)

	_, _, good := clientCA.issue(t, "worker-1", false)
	_, _, rogue := rogueCA.issue(t, "intruder", false)
	_, _, serverOnly := clientCA.issue(t, "not-a-client", true)

	t.Run("ClientCertificateAccepted", func(t *testing.T) {
		c := secTLSClient(roots, 0, good)
		defer c.CloseIdleConnections()
		secMust(t, c, "GET", base+"/readyz", "", "", 200)
		secMust(t, c, "PUT", base+"/v1/limits/mtls:x", ops.token, `{"capacity": 1}`, 201)
		// mTLS admits the machine; the token still decides what it may do.
		secMust(t, c, "GET", base+"/v1/limits/mtls:x", "", "", 401)
	})
	for name, certs := range map[string][]tls.Certificate{
		"NoClientCertificate":   nil,
		"UntrustedClientCA":     {rogue},
		"WrongExtendedKeyUsage": {serverOnly},
	} {
		t.Run(name, func(t *testing.T) {
			c := secTLSClient(roots, 0, certs...)
			defer c.CloseIdleConnections()
			if r, err := secDo(c, "GET", base+"/readyz", "", ""); err == nil {
				t.Fatalf("served without a valid client certificate: %d", r.status)
			}
		})
	}
	p.stop()
	secNoTokensIn(t, p, ops)
}

func TestBinaryMetricsOnOwnListener(t *testing.T) {
	bin := e2eBuild(t)
	ops := secToken{"ops", "admin", "*", "limitd_metrics-ops-token"}
	tokens := filepath.Join(t.TempDir(), "tokens")
	secWriteTokens(t, tokens, ops)
	p := secStart(t, bin, "--tokens-file", tokens, "--metrics-addr", "127.0.0.1:0")
	listening := p.waitLog("metrics listening", nil)
	metricsAddr, _ := listening["addr"].(string)
	if metricsAddr == "" || metricsAddr == p.addr {
		t.Fatalf("metrics address %q (main %q)", metricsAddr, p.addr)
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	r := secMust(t, client, "GET", "http://"+p.addr+"/metrics", "", "", 404)
	if !strings.Contains(r.body, "--metrics-addr") {
		t.Fatalf("main /metrics: %s", r.body)
	}
	secMust(t, client, "GET", "http://"+p.addr+"/readyz", "", "", 200)
	secMust(t, client, "GET", "http://"+metricsAddr+"/v1/limits", ops.token, "", 404)
	secMust(t, client, "GET", "http://"+metricsAddr+"/readyz", "", "", 404)
	// The scrape needs no token and is the API's own /metrics.
	r = secMust(t, client, "GET", "http://"+metricsAddr+"/metrics", "", "", 200)
	if !strings.Contains(r.body, "# TYPE limitd_") {
		t.Fatalf("metrics listener /metrics is not limitd's exposition:\n%.500s", r.body)
	}
	p.stop()
}
