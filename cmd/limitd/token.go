package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"

	"github.com/limitd/limitd/internal/auth"
)

// tokenPrefix marks limitd's tokens so that secret scanners and humans can
// recognize one that leaked into a repository or a ticket.
const tokenPrefix = "limitd_"

// tokenBytes of randomness: 256 bits, beyond any guessing.
const tokenBytes = 32

func runToken(_ context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("limitd token new", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: limitd token new NAME SCOPE PATTERN

Prints a new random bearer token on the first line and, on the second, the
line to add to the tokens file (--tokens-file). The file keeps only the
token's SHA-256, so the token is shown this once: hand it to its holder now.

  NAME     who holds it, shown in logs and the audit trail (`+auth.NameRule+`)
  SCOPE    admin (everything), worker (acquire, renew, release, read) or read (GET only)
  PATTERN  the limits it covers: `+auth.PatternRule+`
           (quote it in a shell: 'team-a:*')

Then send limitd SIGHUP to load the file again.
`)
	}
	if len(args) == 0 || args[0] != "new" {
		fs.Usage()
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return errUsage
	}
	if err := fs.Parse(args[1:]); err != nil {
		return parseError(err)
	}
	if fs.NArg() != 3 {
		fs.Usage()
		return errUsage
	}
	name, scopeArg, patternArg := fs.Arg(0), fs.Arg(1), fs.Arg(2)
	if err := auth.ValidateTokenName(name); err != nil {
		return fmt.Errorf("NAME %q: %w", name, err)
	}
	scope, err := auth.ParseScope(scopeArg)
	if err != nil {
		return fmt.Errorf("SCOPE %q: %w", scopeArg, err)
	}
	pattern, err := auth.ParsePattern(patternArg)
	if err != nil {
		return fmt.Errorf("PATTERN %q: %w", patternArg, err)
	}
	token, err := newToken()
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, token)
	fmt.Fprintln(e.stdout, auth.FileLine(name, scope, pattern, auth.Hash(token)))
	fmt.Fprintln(e.stderr, "limitd: line 1 is the token (shown only this once; the holder sends it as \"Authorization: Bearer TOKEN\" or sets LIMITD_TOKEN);\n"+
		"line 2 goes into the tokens file, then send limitd SIGHUP.")
	return nil
}

// newToken returns a fresh token: the prefix and 32 random bytes in
// unpadded base64url, which is valid in a Bearer header as it is.
func newToken() (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", errors.New("reading random bytes for the token: " + err.Error())
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}
