package client_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// doProgram is the compiled twin of the README's Go program.
const doProgram = "examples/do/main.go"

// readmeGoBlock returns the first ```go block of README.md's section on
// this package.
func readmeGoBlock(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	const heading = "## From Go: package `client`\n"
	start := strings.Index(readme, heading)
	if start < 0 {
		t.Fatalf("README.md has no %q section", strings.TrimSpace(heading))
	}
	section := readme[start+len(heading):]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	_, code, ok := strings.Cut(section, "```go\n")
	if !ok {
		t.Fatal("README.md's Go section has no ```go block")
	}
	code, _, ok = strings.Cut(code, "```\n")
	if !ok {
		t.Fatal("README.md's Go block is not closed")
	}
	return code
}

// The README shows the program in examples/do verbatim, so what users copy
// is what compiles (go vet ./client/... builds it) and what
// TestReadmeProgramRuns runs.
func TestReadmeShowsTheExampleProgram(t *testing.T) {
	t.Parallel()
	want, err := os.ReadFile(doProgram)
	if err != nil {
		t.Fatal(err)
	}
	if got := readmeGoBlock(t); got != string(want) {
		t.Fatalf("README.md's Go block differs from %s; copy the file into the README.\nREADME:\n%s\n%s:\n%s", doProgram, got, doProgram, want)
	}
}

// The README's program works as shown: against a server with the limit
// api-x, it runs its function once and releases the slot.
func TestReadmeProgramRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program")
	}
	t.Parallel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH")
	}
	bin := filepath.Join(t.TempDir(), "do")
	build := exec.CommandContext(t.Context(), goTool, "build", "-o", bin, "./"+filepath.Dir(doProgram))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", filepath.Dir(doProgram), err, out)
	}

	srv, admin := mustStart(t)
	mustPutLimit(t, admin, "api-x", 3)
	cmd := exec.CommandContext(t.Context(), bin)
	cmd.Env = append(os.Environ(), "LIMITD_URL="+srv.URL, "LIMITD_TOKEN=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the README's program: %v\n%s", err, stderr.String())
	}
	if stdout.String() != "calling the API\n" {
		t.Errorf("the README's program printed %q", stdout.String())
	}
	l, err := admin.GetLimit(t.Context(), "api-x")
	if err != nil || l.InUse != 0 {
		t.Fatalf("after the program: %+v, %v; want the slot released", l, err)
	}
}
