package auth_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/limitd/limitd/internal/auth"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func hashHex(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

func mustParse(t *testing.T, text string) *auth.Set {
	t.Helper()
	set, err := auth.Parse(strings.NewReader(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return set
}

func TestParse(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		set := mustParse(t, "# limitd tokens\n\n"+
			"ops admin * "+hashHex("tok-ops")+"\n"+
			"  etl-workers\tworker team-a:* "+hashHex("tok-etl")+"   # trailing comment\n"+
			"dash read team-b:x "+strings.ToUpper(hashHex("tok-dash"))+"\n")
		if set.Len() != 3 {
			t.Fatalf("Len = %d, want 3", set.Len())
		}
		tok, ok := set.Lookup("tok-etl")
		if !ok || tok.Name != "etl-workers" || tok.Scope != auth.ScopeWorker || tok.Pattern != "team-a:*" || tok.Line != 4 {
			t.Fatalf("Lookup(tok-etl) = %+v, %v", tok, ok)
		}
		if tok, ok := set.Lookup("tok-dash"); !ok || tok.Name != "dash" {
			t.Fatalf("an upper-case hash does not match: %+v, %v", tok, ok)
		}
	})
	t.Run("EmptyFileIsEmptySet", func(t *testing.T) {
		if set := mustParse(t, "# nobody\n"); set.Len() != 0 {
			t.Fatalf("Len = %d", set.Len())
		}
	})
	t.Run("NameMayRepeatForRotation", func(t *testing.T) {
		set := mustParse(t, "etl worker * "+hashHex("old")+"\netl worker * "+hashHex("new")+"\n")
		for _, tk := range []string{"old", "new"} {
			if tok, ok := set.Lookup(tk); !ok || tok.Name != "etl" {
				t.Fatalf("Lookup(%s) = %+v, %v", tk, tok, ok)
			}
		}
	})

	good := hashHex("secret")
	for _, tc := range []struct {
		name, line, want string
	}{
		{"ErrFieldCount", "ops admin *", "has 3 fields, want 4"},
		{"ErrTooManyFields", "ops admin * " + good + " extra", "has 5 fields"},
		{"ErrScope", "ops root * " + good, "scope must be admin, worker or read"},
		{"ErrName", "o/ps admin * " + good, "name must be"},
		{"ErrPatternInnerStar", "ops admin team-*-x " + good, "pattern must be"},
		{"ErrPatternTwoStars", "ops admin team** " + good, "pattern must be"},
		{"ErrPatternBadName", "ops admin -team " + good, "pattern must be"},
		{"ErrPatternSlash", "ops admin team/a " + good, "pattern must be"},
		{"ErrHashShort", "ops admin * abc", "64 hex digits"},
		{"ErrHashNotHex", "ops admin * " + strings.Repeat("g", 64), "64 hex digits"},
		{"ErrTokenInsteadOfHash", "ops admin * limitd_supersecretTOKENvalue", "not the token itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := auth.Parse(strings.NewReader("# header\nok read * " + hashHex("other") + "\n" + tc.line + "\n"))
			var pe *auth.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a *ParseError", err)
			}
			if pe.Line != 3 || !strings.Contains(err.Error(), "line 3: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %q (line %d), want line 3 and %q", err, pe.Line, tc.want)
			}
			// The error may end up in a log: it must not quote the line.
			for _, f := range strings.Fields(tc.line) {
				if len(f) > 3 && strings.Contains(err.Error(), f) {
					t.Fatalf("err %q quotes the field %q", err, f)
				}
			}
		})
	}
	t.Run("ErrDuplicateHash", func(t *testing.T) {
		_, err := auth.Parse(strings.NewReader("a read * " + good + "\nb admin * " + good + "\n"))
		if err == nil || !strings.Contains(err.Error(), "line 2: the same token hash is on line 1") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestParseFileNamesPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("\n\nbad\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := auth.ParseFile(path)
	if err == nil || !strings.Contains(err.Error(), path+": line 3: ") {
		t.Fatalf("err = %v, want the path and line 3", err)
	}
	if _, err := auth.ParseFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing file parsed")
	}
}

// TestPatternDoesNotEscape protects the boundary between teams: a pattern
// covers exactly the names it says, byte for byte.
func TestPatternDoesNotEscape(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"team-a:*", "team-a:x", true},
		{"team-a:*", "team-a:", true},
		{"team-a:*", "team-b:x", false},
		{"team-a:*", "team-a", false},
		{"team-a:*", "team-ab:x", false},
		{"team-a:*", "TEAM-A:x", false},
		{"team-a", "team-a", true},
		{"team-a", "team-ab", false},
		{"team-a", "team-", false},
		{"team-a", "Team-a", false},
		{"team-a*", "team-ab", true},
		{"*", "anything", true},
	} {
		p, err := auth.ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tc.pattern, err)
		}
		if got := p.Match(tc.name); got != tc.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

func TestScopesInclude(t *testing.T) {
	tok := func(s auth.Scope) auth.Token { return auth.Token{Name: "t", Scope: s, Pattern: "*"} }
	for _, tc := range []struct {
		have, need auth.Scope
		want       bool
	}{
		{auth.ScopeAdmin, auth.ScopeWorker, true},
		{auth.ScopeAdmin, auth.ScopeRead, true},
		{auth.ScopeWorker, auth.ScopeAdmin, false},
		{auth.ScopeWorker, auth.ScopeRead, true},
		{auth.ScopeRead, auth.ScopeWorker, false},
	} {
		if got := tok(tc.have).Allows(tc.need, "x"); got != tc.want {
			t.Errorf("%s allows %s = %v, want %v", tc.have, tc.need, got, tc.want)
		}
	}
}

func TestRequiredScope(t *testing.T) {
	for _, tc := range []struct {
		method, pattern string
		want            auth.Scope
	}{
		{"GET", "/v1/limits", auth.ScopeRead},
		{"GET", "/v1/limits/{name}/waiters", auth.ScopeRead},
		{"GET", "/v1/leases/{id}", auth.ScopeRead},
		{"POST", "/v1/limits/{name}/acquire", auth.ScopeWorker},
		{"POST", "/v1/leases/{id}/renew", auth.ScopeWorker},
		{"DELETE", "/v1/leases/{id}", auth.ScopeWorker},
		{"PUT", "/v1/limits/{name}", auth.ScopeAdmin},
		{"DELETE", "/v1/limits/{name}", auth.ScopeAdmin},
		// A route nobody told auth about fails closed.
		{"POST", "/v1/limits/{name}/reset", auth.ScopeAdmin},
	} {
		if got := auth.RequiredScope(tc.method, tc.pattern); got != tc.want {
			t.Errorf("RequiredScope(%s %s) = %s, want %s", tc.method, tc.pattern, got, tc.want)
		}
	}
}

func TestLookupUnknown(t *testing.T) {
	set := mustParse(t, "a admin * "+hashHex("right")+"\n")
	for _, tk := range []string{"", "righ", "right ", "RIGHT", hashHex("right")} {
		if _, ok := set.Lookup(tk); ok {
			t.Errorf("Lookup(%q) found a token", tk)
		}
	}
}

func TestKeyringReloadKeepsOldSetOnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a admin * " + hashHex("one") + "\n")
	k, err := auth.OpenKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	write("a admin * " + hashHex("one") + "\nb worker *\n")
	if _, err := k.Reload(); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("Reload of a malformed file: err = %v, want line 2", err)
	}
	if _, ok := k.Set().Lookup("one"); !ok {
		t.Fatal("a failed reload dropped the old set")
	}
	write("b worker * " + hashHex("two") + "\n")
	set, err := k.Reload()
	if err != nil || set.Len() != 1 {
		t.Fatalf("Reload: %v", err)
	}
	if _, ok := k.Set().Lookup("one"); ok {
		t.Fatal("a revoked token still works after the reload")
	}
	if _, ok := k.Set().Lookup("two"); !ok {
		t.Fatal("an added token does not work after the reload")
	}
}
