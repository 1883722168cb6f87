// Package auth is limitd's bearer-token authentication and authorization:
// the tokens file, a token set that SIGHUP can swap atomically, and the HTTP
// middleware that decides, per route and per limit, who may do what.
//
// The tokens file holds only SHA-256 hashes of tokens, so it is no secret,
// and no error message or log line ever quotes a token or the file's fields.
package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/limitd/limitd"
)

// Scope is what a token may do; each scope includes the ones below it.
type Scope int

// The scopes, weakest first, so that "allowed" is a comparison.
const (
	// ScopeRead may only read (GET) limits, leases and waiters.
	ScopeRead Scope = iota + 1
	// ScopeWorker may also acquire, renew and release leases.
	ScopeWorker
	// ScopeAdmin may do everything, including creating and deleting limits.
	ScopeAdmin
)

// ParseScope parses "admin", "worker" or "read".
func ParseScope(s string) (Scope, error) {
	switch s {
	case "admin":
		return ScopeAdmin, nil
	case "worker":
		return ScopeWorker, nil
	case "read":
		return ScopeRead, nil
	}
	return 0, errors.New("scope must be admin, worker or read")
}

func (s Scope) String() string {
	switch s {
	case ScopeAdmin:
		return "admin"
	case ScopeWorker:
		return "worker"
	case ScopeRead:
		return "read"
	}
	return fmt.Sprintf("Scope(%d)", int(s))
}

// Pattern selects the limits a token may touch: a limit name, a prefix
// ending in "*", or "*" for every limit.
type Pattern string

// PatternRule is quoted in every error about a bad pattern.
const PatternRule = `a limit name, a prefix of one ending in "*" (such as team-a:*), or "*"`

// ParsePattern checks a pattern. A "*" may only come last, and what
// precedes it must itself be a valid limit name, so that a pattern cannot
// promise more than names can hold.
func ParsePattern(s string) (Pattern, error) {
	if s == "*" {
		return Pattern(s), nil
	}
	prefix := strings.TrimSuffix(s, "*")
	if strings.Contains(prefix, "*") || limitd.ValidateName(prefix) != nil {
		return "", errors.New("pattern must be " + PatternRule)
	}
	return Pattern(s), nil
}

// Match reports whether the pattern covers the limit name. Names are
// compared byte for byte: "team-a" does not cover "team-ab", and "team-a:*"
// covers "team-a:x" but not "team-b:x" nor "team-a" itself.
func (p Pattern) Match(name string) bool {
	if prefix, ok := strings.CutSuffix(string(p), "*"); ok {
		return strings.HasPrefix(name, prefix)
	}
	return string(p) == name
}

// Token is one line of the tokens file: who the token belongs to and what it
// may do. The token itself is never kept, only its hash.
type Token struct {
	Name    string
	Scope   Scope
	Pattern Pattern
	// Line is the line of the tokens file it came from.
	Line int
	hash [sha256.Size]byte
}

// Allows reports whether the token may do something that needs scope on the
// limit name.
func (t Token) Allows(scope Scope, name string) bool {
	return t.Scope >= scope && t.Pattern.Match(name)
}

// FileLine is the tokens-file line of a token with the given hash.
func FileLine(name string, scope Scope, pattern Pattern, hash [sha256.Size]byte) string {
	return fmt.Sprintf("%s %s %s %s", name, scope, pattern, hex.EncodeToString(hash[:]))
}

// Hash is the SHA-256 of a token, as the tokens file stores it.
func Hash(token string) [sha256.Size]byte {
	return sha256.Sum256([]byte(token))
}

// NameRule is quoted in every error about a bad token name.
const NameRule = "1-64 characters of A-Z a-z 0-9 . _ - : @"

// ValidateTokenName checks the NAME of a token, which appears in logs.
func ValidateTokenName(name string) error {
	if name == "" || len(name) > 64 {
		return errors.New("name must be " + NameRule)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-:@", c) >= 0) {
			return errors.New("name must be " + NameRule)
		}
	}
	return nil
}

// Set is an immutable set of tokens. Swap a new one in rather than change it.
type Set struct {
	tokens []Token
}

// Len is the number of tokens in the set.
func (s *Set) Len() int { return len(s.tokens) }

// Lookup finds the token whose hash is the SHA-256 of presented.
//
// It compares the hash with every entry in constant time and never stops
// early, so the time taken depends on the number of tokens only, not on
// which one matched or how much of a hash did. A map keyed by the hash would
// be safe too (an attacker who learns about a hash learns nothing useful
// about a token, since SHA-256 has no known preimages), but the scan leaves
// nothing to argue about, and sets are small: a hundred tokens cost a few
// microseconds.
func (s *Set) Lookup(presented string) (Token, bool) {
	h := Hash(presented)
	found := -1
	for i := range s.tokens {
		if subtle.ConstantTimeCompare(h[:], s.tokens[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Token{}, false
	}
	return s.tokens[found], true
}

// ParseError is a malformed tokens file, with the line at fault.
type ParseError struct {
	Path string // "" when parsed from a reader
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	where := "tokens file"
	if e.Path != "" {
		where += " " + e.Path
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s: line %d: %s", where, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", where, e.Msg)
}

// Parse reads a tokens file: one token per line, "NAME SCOPE PATTERN
// SHA256HEX" separated by spaces or tabs; "#" starts a comment; blank lines
// are skipped. The first bad line fails the whole file. A NAME may appear on
// several lines (old and new token while rotating); a hash may not, since it
// would make one token mean two things.
//
// Errors name the line and the rule it breaks but never quote the line: a
// misplaced token must not end up in a log.
func Parse(r io.Reader) (*Set, error) {
	set := &Set{}
	seen := make(map[[sha256.Size]byte]int)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if i := bytes.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 4 {
			return nil, &ParseError{Line: n, Msg: fmt.Sprintf("has %d fields, want 4: NAME SCOPE PATTERN SHA256HEX", len(fields))}
		}
		tok, err := parseFields(fields)
		if err != nil {
			return nil, &ParseError{Line: n, Msg: err.Error()}
		}
		if first, dup := seen[tok.hash]; dup {
			return nil, &ParseError{Line: n, Msg: fmt.Sprintf("the same token hash is on line %d: give each token one line", first)}
		}
		seen[tok.hash] = n
		tok.Line = n
		set.tokens = append(set.tokens, tok)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &ParseError{Line: n + 1, Msg: "line is longer than 64 KiB"}
		}
		return nil, &ParseError{Msg: err.Error()}
	}
	return set, nil
}

func parseFields(f []string) (Token, error) {
	if err := ValidateTokenName(f[0]); err != nil {
		return Token{}, err
	}
	scope, err := ParseScope(f[1])
	if err != nil {
		return Token{}, err
	}
	pattern, err := ParsePattern(f[2])
	if err != nil {
		return Token{}, err
	}
	tok := Token{Name: f[0], Scope: scope, Pattern: pattern}
	if len(f[3]) != 2*sha256.Size {
		return Token{}, errHashField()
	}
	if _, err := hex.Decode(tok.hash[:], []byte(f[3])); err != nil {
		return Token{}, errHashField()
	}
	return tok, nil
}

// errHashField never quotes the field: it may well be a token pasted in
// place of its hash.
func errHashField() error {
	return errors.New("the last field must be the 64 hex digits of the token's SHA-256 (as printed by \"limitd token new\"), not the token itself")
}

// ParseFile reads the tokens file at path.
func ParseFile(path string) (*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	set, err := Parse(f)
	if err != nil {
		var pe *ParseError
		if errors.As(err, &pe) {
			pe.Path = path
		}
		return nil, err
	}
	return set, nil
}
