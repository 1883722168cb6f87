package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/limitd/limitd/internal/auth"
)

func TestIsLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7070":     true,
		"127.1.2.3:7070":     true,
		"[::1]:7070":         true,
		"localhost:7070":     true,
		"0.0.0.0:7070":       false,
		":7070":              false,
		"[::]:7070":          false,
		"10.0.0.1:7070":      false,
		"192.168.1.5:7070":   false,
		"example.com:7070":   false,
		"localhost.:7070":    false,
		"127.0.0.1.nip.io:1": false,
	} {
		got, err := isLoopbackAddr(addr)
		if err != nil || got != want {
			t.Errorf("isLoopbackAddr(%q) = %v, %v; want %v", addr, got, err, want)
		}
	}
	if _, err := isLoopbackAddr("127.0.0.1"); err == nil {
		t.Error("an address without a port was accepted")
	}
}

// TestNonLoopbackNeedsTokens: without a tokens file, only loopback
// addresses are served, unless --insecure-no-auth says otherwise; the error
// names both ways out.
func TestNonLoopbackNeedsTokens(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:7070", ":7070", "[::]:7070", "10.0.0.1:7070", "example.com:7070"} {
		err := securityConfig{}.validate(addr)
		if err == nil {
			t.Fatalf("%s without tokens was accepted", addr)
		}
		for _, want := range []string{"refusing to listen on --addr " + addr, "not a loopback address", "--tokens-file", "--insecure-no-auth"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		// TLS protects the wire, not the API: still refused.
		if (securityConfig{TLSCert: "c", TLSKey: "k"}).validate(addr) == nil {
			t.Errorf("%s with TLS but no tokens was accepted", addr)
		}
		if err := (securityConfig{TokensFile: "tokens"}).validate(addr); err != nil {
			t.Errorf("%s with a tokens file: %v", addr, err)
		}
		if err := (securityConfig{InsecureNoAuth: true}).validate(addr); err != nil {
			t.Errorf("%s with --insecure-no-auth: %v", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:7070", "[::1]:7070", "localhost:7070"} {
		if err := (securityConfig{}).validate(addr); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
}

func TestSecurityFlagsValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  securityConfig
		want string
	}{
		{securityConfig{TLSCert: "c"}, "--tls-cert and --tls-key must be given together"},
		{securityConfig{TLSKey: "k"}, "--tls-cert and --tls-key must be given together"},
		{securityConfig{TLSClientCA: "ca"}, "--tls-client-ca needs --tls-cert"},
		{securityConfig{TokensFile: "t", InsecureNoAuth: true}, "contradict"},
		{securityConfig{MetricsAddr: "9090"}, "--metrics-addr"},
	} {
		err := tc.cfg.validate("127.0.0.1:7070")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestTokenNew(t *testing.T) {
	newOne := func() (token, line string) {
		t.Helper()
		var out, errOut bytes.Buffer
		e := &env{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}
		if err := runToken(context.Background(), e, []string{"new", "etl-a", "worker", "team-a:*"}); err != nil {
			t.Fatalf("token new: %v (%s)", err, errOut.String())
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 2 {
			t.Fatalf("stdout has %d lines, want the token and the file line: %q", len(lines), out.String())
		}
		if strings.Contains(errOut.String(), lines[0]) {
			t.Fatal("the token is also printed on stderr")
		}
		return lines[0], lines[1]
	}
	token, line := newOne()
	if !strings.HasPrefix(token, "limitd_") || len(token) < len("limitd_")+43 {
		t.Fatalf("token %q is not limitd_ and 256 bits of base64url", token)
	}
	sum := sha256.Sum256([]byte(token))
	if want := "etl-a worker team-a:* " + hex.EncodeToString(sum[:]); line != want {
		t.Fatalf("file line = %q, want %q", line, want)
	}
	if strings.Contains(line, token) {
		t.Fatal("the file line contains the token")
	}
	set, err := auth.Parse(strings.NewReader(line + "\n"))
	if err != nil {
		t.Fatalf("the printed line does not parse: %v", err)
	}
	if tok, ok := set.Lookup(token); !ok || tok.Name != "etl-a" || tok.Scope != auth.ScopeWorker {
		t.Fatalf("the printed token does not match its line: %+v %v", tok, ok)
	}
	if other, _ := newOne(); other == token {
		t.Fatal("two tokens are the same")
	}

	for _, args := range [][]string{
		{"new", "etl", "root", "*"},
		{"new", "e t l", "admin", "*"},
		{"new", "etl", "admin", "team-*-a"},
		{"new", "etl", "admin"},
		{"old", "etl", "admin", "*"},
		{},
	} {
		var out, errOut bytes.Buffer
		e := &env{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}
		if err := runToken(context.Background(), e, args); err == nil || out.Len() != 0 {
			t.Errorf("token %q: err %v, stdout %q; want an error and no token", args, err, out.String())
		}
	}
}
