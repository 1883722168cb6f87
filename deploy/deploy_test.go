// Package deploy_test checks the files that run limitd in production (the
// container image, the compose file, the systemd unit, the Kubernetes
// manifests and the Makefile) against what limitd does: its listen port,
// its routes, its shutdown grace, where its database lives, and the rule
// that it refuses a non-loopback address without authentication. Docker and
// Kubernetes are not available where these tests run, so the files are
// parsed and cross-checked, and the binary is run the way each of them runs
// it.
package deploy_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/limitd/limitd/internal/api"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v4"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// What limitd does, as the team's decisions record it. TestFlagDefaultsAreWhatDeployAssumes
// compares these with the built binary, so they cannot drift silently.
const (
	defaultAddr          = "127.0.0.1:7070"
	defaultShutdownGrace = 5 * time.Second
	// healthTimeout is the default --timeout of "limitd health".
	healthTimeout = 2 * time.Second
)

// routes are the server's routes, as "METHOD /pattern": the router's own
// list (what Handler serves, and what internal/api's tests compare with
// openapi.yaml), so a renamed or removed route fails the probe checks here.
func routes(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, r := range api.New(api.Config{}).Routes() {
		out = append(out, r.Method+" "+r.Pattern)
	}
	if len(out) == 0 {
		t.Fatal("internal/api lists no routes")
	}
	return out
}

// downJob is the scrape job name that LimitdDown in rules.yml selects: the
// one rule that depends on it, and with absent() a job of another name makes
// it fire for ever.
func downJob(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`absent\(up\{job="([^"]+)"\}\)`).FindSubmatch(readFile(t, "prometheus/rules.yml"))
	if m == nil {
		t.Fatal(`prometheus/rules.yml has no absent(up{job="..."}) in LimitdDown`)
	}
	return string(m[1])
}

// serveFlags are the flags of "limitd serve"; each is also LIMITD_ and its
// name in upper case with _ for -.
func serveFlags() []string {
	return []string{
		"addr", "db", "default-ttl", "max-ttl", "default-wait", "max-wait", "max-waiters",
		"max-body", "log-format", "log-level", "shutdown-grace", "sync",
		"read-header-timeout", "read-timeout", "idle-timeout", "max-conns",
		"tokens-file", "metrics-addr", "tls-cert", "tls-key", "tls-client-ca", "insecure-no-auth",
	}
}

// clientEnv are the LIMITD_ variables of the client subcommands.
func clientEnv() []string { return []string{"LIMITD_URL", "LIMITD_TOKEN"} }

func envName(flagName string) string {
	return "LIMITD_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// releaseTargets are the platforms "make release" must build.
func releaseTargets() []string { return []string{"linux/amd64", "linux/arm64", "darwin/arm64"} }

// ---- every file parses --------------------------------------------------

func TestEveryYAMLAndJSONFileParses(t *testing.T) {
	var n int
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		switch filepath.Ext(p) {
		case ".yaml", ".yml":
			n++
			readYAML(t, p)
		case ".json":
			n++
			var v any
			if err := json.Unmarshal(readFile(t, p), &v); err != nil {
				t.Errorf("%s: %v", p, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no YAML or JSON file under deploy/")
	}
}

// ---- the container image -------------------------------------------------

func TestDockerfileRunsAStaticNonRootBinaryThatStopsGracefully(t *testing.T) {
	df := parseDockerfile(t, "docker/Dockerfile")
	final := df.stages[len(df.stages)-1]
	if len(df.stages) < 2 {
		t.Errorf("Dockerfile has %d stage(s); want a builder and a runtime stage", len(df.stages))
	}

	t.Run("MinimalNonRootBase", func(t *testing.T) {
		if !strings.Contains(final.from, "distroless/static") && final.from != "scratch" {
			t.Errorf("runtime base %q: want distroless static (or scratch): the binary is static", final.from)
		}
		users := final.all("USER")
		if len(users) == 0 {
			t.Fatal("no USER in the runtime stage: the container would run as root")
		}
		user, _, _ := strings.Cut(users[len(users)-1], ":")
		if user == "root" || user == "0" {
			t.Errorf("USER %s: want a non-root user", users[len(users)-1])
		}
	})

	t.Run("StaticTrimmedVersionedBuild", func(t *testing.T) {
		build := strings.Join(df.stages[0].all("RUN"), "\n")
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=", "./cmd/limitd"} {
			if !strings.Contains(build, want) {
				t.Errorf("the builder stage never says %q", want)
			}
		}
	})

	t.Run("StopSignalIsSIGTERM", func(t *testing.T) {
		// SIGTERM is limitd's graceful stop; anything else (SIGKILL, or
		// SIGQUIT with its stack dump) would cut waiters off.
		if got := final.last("STOPSIGNAL"); got != "SIGTERM" {
			t.Errorf("STOPSIGNAL %q, want SIGTERM", got)
		}
	})

	t.Run("ListensOnTheDefaultPort", func(t *testing.T) {
		env := final.env()
		port := portOf(t, env["LIMITD_ADDR"])
		if port != portOf(t, defaultAddr) {
			t.Errorf("ENV LIMITD_ADDR=%s: port differs from limitd's default %s", env["LIMITD_ADDR"], defaultAddr)
		}
		exposed := strings.Fields(final.last("EXPOSE"))
		if !slices.Contains(exposed, port) && !slices.Contains(exposed, port+"/tcp") {
			t.Errorf("EXPOSE %v does not include the listen port %s", exposed, port)
		}
	})

	t.Run("DatabaseOnAVolumeOwnedByTheUser", func(t *testing.T) {
		db := final.env()["LIMITD_DB"]
		if db == "" || !path.IsAbs(db) {
			t.Fatalf("ENV LIMITD_DB=%q: want an absolute path on the volume", db)
		}
		vols := dockerList(final.last("VOLUME"))
		vol := mountHolding(vols, path.Dir(db))
		if vol == "" {
			t.Fatalf("VOLUME %v does not hold the database directory %s: the state would die with the container", vols, path.Dir(db))
		}
		// Docker copies the image's ownership of the directory into a new
		// named volume; owned by root, nonroot could not create the database.
		owned := false
		for _, c := range final.all("COPY") {
			f := strings.Fields(c)
			if strings.HasPrefix(c, "--") && slices.ContainsFunc(f, func(s string) bool { return strings.HasPrefix(s, "--chown=") }) &&
				path.Clean(f[len(f)-1]) == vol {
				owned = true
			}
		}
		if !owned {
			t.Errorf("no COPY --chown=... %s in the runtime stage: a fresh volume would be owned by root", vol)
		}
	})

	t.Run("HealthcheckRunsTheBinaryItself", func(t *testing.T) {
		cmd, opts := final.healthcheck(t)
		entry := dockerList(final.last("ENTRYPOINT"))
		if len(cmd) < 2 || cmd[1] != "health" {
			t.Fatalf("HEALTHCHECK CMD %q: want [BINARY health ...] (the image has no curl)", cmd)
		}
		if len(entry) == 0 || cmd[0] != entry[0] {
			t.Errorf("HEALTHCHECK runs %q but the ENTRYPOINT is %q", cmd[0], entry)
		}
		if !copiesTo(final, cmd[0]) {
			t.Errorf("no COPY puts the binary at %s", cmd[0])
		}
		// Docker kills a check that overruns its --timeout with no message;
		// limitd health should give up first and say why.
		if d := durationOr(t, opts["timeout"], 30*time.Second); d <= healthTimeout {
			t.Errorf("HEALTHCHECK --timeout=%v must exceed limitd health's own %v timeout", d, healthTimeout)
		}
	})

	t.Run("RefusesNoAuthUnlessToldOtherwise", func(t *testing.T) {
		checkAuthRule(t, "the image's ENV", final.env())
	})

	t.Run("IgnoreFileKeepsTheSources", func(t *testing.T) {
		for _, pat := range ignorePatterns(t, "docker/Dockerfile.dockerignore") {
			for _, needed := range []string{"go.mod", "go.sum", "cmd", "cmd/limitd/main.go", "internal", "limitd.go"} {
				if ok, _ := filepath.Match(strings.TrimPrefix(pat, "/"), needed); ok {
					t.Errorf("Dockerfile.dockerignore pattern %q excludes %s, which the build needs", pat, needed)
				}
			}
		}
	})
}

// dockerRun is one "docker run" command line as the docs give it.
type dockerRun struct {
	where   string
	publish []string          // -p
	volumes map[string]string // -v: container path → source
	env     map[string]string // -e
	image   string
}

// dockerRuns finds the "docker run" commands in text: each runs to the end
// of its code span (`...`) or of its line, backslash continuations joined.
func dockerRuns(t *testing.T, where, text string) []dockerRun {
	t.Helper()
	text = regexp.MustCompile(`\\\n\s*`).ReplaceAllString(text, " ")
	var out []dockerRun
	for _, m := range regexp.MustCompile("docker run [^`\n]*").FindAllString(text, -1) {
		out = append(out, parseDockerRun(t, where, strings.TrimSpace(m)))
	}
	return out
}

func parseDockerRun(t *testing.T, where, cmd string) dockerRun {
	t.Helper()
	r := dockerRun{where: where + ": " + cmd, volumes: map[string]string{}, env: map[string]string{}}
	words := shellWords(strings.TrimPrefix(cmd, "docker run "))
	for i := 0; i < len(words); i++ {
		w := words[i]
		arg := func() string {
			if i+1 >= len(words) {
				t.Fatalf("%s: %s without a value", r.where, w)
			}
			i++
			return words[i]
		}
		switch {
		case w == "-p" || w == "--publish":
			r.publish = append(r.publish, arg())
		case w == "-v" || w == "--volume":
			parts := strings.Split(arg(), ":")
			if len(parts) < 2 {
				t.Fatalf("%s: -v %s is not SOURCE:TARGET", r.where, parts[0])
			}
			r.volumes[path.Clean(parts[1])] = parts[0]
		case w == "-e" || w == "--env":
			k, v, _ := strings.Cut(arg(), "=")
			r.env[k] = v
		case strings.HasPrefix(w, "-"):
			// --rm, -d, --name x: nothing that this test checks
			if w == "--name" {
				arg()
			}
		default:
			r.image = w
			return r
		}
	}
	t.Fatalf("%s: no image", r.where)
	return r
}

// shellWords splits a command line at spaces, keeping "quoted parts" whole.
func shellWords(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, any := false, false
	for _, c := range s {
		switch {
		case c == '"':
			quoted, any = !quoted, true
		case c == ' ' && !quoted:
			if any {
				out = append(out, cur.String())
			}
			cur.Reset()
			any = false
		default:
			cur.WriteRune(c)
			any = true
		}
	}
	if any {
		out = append(out, cur.String())
	}
	return out
}

// TestDocumentedDockerRunCommandsStart checks each "docker run" that the
// README's Deploy section and the Dockerfile's header give against the
// image: limitd would start with that environment, the database is on a
// volume, the listen port is published, a mounted tokens file is where
// LIMITD_TOKENS_FILE points, and without authentication only loopback sees
// the port. One command with a tokens file and one that opts out must be
// there.
func TestDocumentedDockerRunCommandsStart(t *testing.T) {
	final := parseDockerfile(t, "docker/Dockerfile")
	image := final.stages[len(final.stages)-1].env()
	readme := string(readFile(t, "../README.md"))
	start := strings.Index(readme, "\n## Deploy\n")
	if start < 0 {
		t.Fatal(`README.md has no "## Deploy" section`)
	}
	deploy := readme[start+1:]
	if end := strings.Index(deploy, "\n## "); end >= 0 {
		deploy = deploy[:end]
	}
	var header strings.Builder
	for _, line := range strings.Split(string(readFile(t, "docker/Dockerfile")), "\n") {
		if !strings.HasPrefix(line, "#") {
			break
		}
		header.WriteString(strings.TrimPrefix(line, "#") + "\n")
	}
	for _, src := range []struct{ where, text string }{
		{"README.md Deploy", deploy}, {"deploy/docker/Dockerfile header", header.String()},
	} {
		runs := dockerRuns(t, src.where, src.text)
		var withTokens, optOut bool
		for _, r := range runs {
			env := map[string]string{}
			for k, v := range image {
				env[k] = v
			}
			for k, v := range r.env {
				env[k] = v
			}
			name := "NoAuthentication"
			if env["LIMITD_TOKENS_FILE"] != "" {
				name = "TokensFile"
			}
			t.Run(strings.Fields(src.where)[0]+"/"+name, func(t *testing.T) {
				if r.image != "limitd" {
					t.Errorf("%s: runs image %q; the build command tags it limitd", r.where, r.image)
				}
				checkAuthRule(t, r.where, env)
				dir := path.Dir(env["LIMITD_DB"])
				if m := mountHolding(sortedKeys(r.volumes), dir); m == "" {
					t.Errorf("%s: no -v holds the database directory %s", r.where, dir)
				} else if src := r.volumes[m]; strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") || strings.HasPrefix(src, "$") {
					t.Errorf("%s: the database is on the bind mount %s, which nonroot may not be able to write: use a named volume", r.where, src)
				}
				port := portOf(t, env["LIMITD_ADDR"])
				loopbackOnly := len(r.publish) > 0
				published := false
				for _, p := range r.publish {
					if strings.HasSuffix(p, ":"+port) {
						published = true
					}
					if !strings.HasPrefix(p, "127.0.0.1:") && !strings.HasPrefix(p, "[::1]:") {
						loopbackOnly = false
					}
				}
				if !published {
					t.Errorf("%s: -p %v does not publish the listen port %s", r.where, r.publish, port)
				}
				if tf := env["LIMITD_TOKENS_FILE"]; tf != "" {
					withTokens = true
					if _, ok := r.volumes[path.Clean(tf)]; !ok && mountHolding(sortedKeys(r.volumes), path.Dir(tf)) == "" {
						t.Errorf("%s: LIMITD_TOKENS_FILE=%s, but no -v puts a file there: limitd would not start", r.where, tf)
					}
				}
				if isTrue(env["LIMITD_INSECURE_NO_AUTH"]) {
					optOut = true
					if !loopbackOnly {
						t.Errorf("%s: runs without authentication and publishes %v beyond this machine", r.where, r.publish)
					}
				}
			})
		}
		if !withTokens || !optOut {
			t.Errorf("%s: want a docker run with a tokens file and one with the explicit opt-out; found %d command(s), tokens file %v, opt-out %v",
				src.where, len(runs), withTokens, optOut)
		}
	}
}

// ---- docker compose --------------------------------------------------------

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Environment      map[string]string `yaml:"environment"`
	Volumes          []string          `yaml:"volumes"`
	Ports            []string          `yaml:"ports"`
	StopGracePeriod  string            `yaml:"stop_grace_period"`
	Command          any               `yaml:"command"`
	Profiles         []string          `yaml:"profiles"`
	NetworkMode      string            `yaml:"network_mode"`
	DependsOnAnyForm any               `yaml:"depends_on"`
}

// mounts maps each container path to its source (a ./path or a volume name).
func (s composeService) mounts() map[string]string {
	m := make(map[string]string)
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 {
			m[path.Clean(parts[1])] = parts[0]
		}
	}
	return m
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	decodeYAML(t, "compose.yaml", &c)
	for _, name := range []string{"limitd", "prometheus", "grafana"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("compose.yaml has no service %q", name)
		}
	}
	return c
}

func TestComposeRunsTheImageWithPrometheusAndGrafana(t *testing.T) {
	c := loadCompose(t)
	lim := c.Services["limitd"]
	image := parseDockerfile(t, "docker/Dockerfile")
	env := image.stages[len(image.stages)-1].env()
	for k, v := range lim.Environment {
		env[k] = v
	}

	t.Run("BuildsTheShippedDockerfile", func(t *testing.T) {
		if lim.Build == nil {
			t.Fatal("the limitd service does not build the image")
		}
		// Paths in compose.yaml are relative to deploy/, like this test.
		df := filepath.Join(lim.Build.Context, lim.Build.Dockerfile)
		got, err1 := os.Stat(df)
		want, err2 := os.Stat(filepath.Join("docker", "Dockerfile"))
		if err1 != nil || err2 != nil || !os.SameFile(got, want) {
			t.Errorf("build context %q + dockerfile %q is %s, not deploy/docker/Dockerfile", lim.Build.Context, lim.Build.Dockerfile, df)
		}
		if _, err := os.Stat(filepath.Join(lim.Build.Context, "go.mod")); err != nil {
			t.Errorf("build context %q does not hold go.mod: %v", lim.Build.Context, err)
		}
	})

	t.Run("RefusesNoAuthUnlessToldOtherwise", func(t *testing.T) {
		checkAuthRule(t, "compose's limitd (image ENV + environment)", env)
	})

	t.Run("UnauthenticatedPortsStayOnThisMachine", func(t *testing.T) {
		if !isTrue(env["LIMITD_INSECURE_NO_AUTH"]) {
			t.Skip("limitd runs with authentication here")
		}
		for _, name := range sortedKeys(c.Services) {
			for _, p := range c.Services[name].Ports {
				if !strings.HasPrefix(p, "127.0.0.1:") && !strings.HasPrefix(p, "[::1]:") {
					t.Errorf("service %s publishes %q on every interface while limitd runs without authentication", name, p)
				}
			}
		}
	})

	t.Run("PublishesTheListenPort", func(t *testing.T) {
		port := portOf(t, env["LIMITD_ADDR"])
		found := false
		for _, p := range lim.Ports {
			if strings.HasSuffix(p, ":"+port) || strings.HasSuffix(p, ":"+port+"/tcp") {
				found = true
			}
		}
		if !found {
			t.Errorf("ports %q do not publish the container port %s", lim.Ports, port)
		}
	})

	t.Run("DatabaseOnAVolume", func(t *testing.T) {
		dir := path.Dir(env["LIMITD_DB"])
		m := mountHolding(sortedKeys(lim.mounts()), dir)
		if m == "" {
			t.Fatalf("no volume of the limitd service holds %s (LIMITD_DB=%s)", dir, env["LIMITD_DB"])
		}
		if src := lim.mounts()[m]; strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
			t.Errorf("%s is a bind mount of %s: use a named volume, which gets the image's ownership", m, src)
		} else if _, ok := c.Volumes[src]; !ok {
			t.Errorf("volume %q is not declared under volumes:", src)
		}
	})

	t.Run("StopGraceExceedsShutdownGrace", func(t *testing.T) {
		// docker's default is 10s.
		stop := durationOr(t, lim.StopGracePeriod, 10*time.Second)
		if grace := shutdownGrace(t, env); stop <= grace {
			t.Errorf("stop_grace_period %v must exceed LIMITD_SHUTDOWN_GRACE %v, or docker kills limitd mid-drain", stop, grace)
		}
	})

	t.Run("BindMountsExist", func(t *testing.T) {
		for _, name := range sortedKeys(c.Services) {
			mounts := c.Services[name].mounts()
			for _, target := range sortedKeys(mounts) {
				src := mounts[target]
				if !strings.HasPrefix(src, "./") {
					continue
				}
				if _, err := os.Stat(src); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
			}
		}
	})

	t.Run("PrometheusScrapesLimitdAndLoadsTheRules", func(t *testing.T) {
		prom := c.Services["prometheus"]
		const configPath = "/etc/prometheus/prometheus.yml" // the image's default --config.file
		if prom.Command != nil {
			t.Fatalf("prometheus has a command %v: check that it still reads %s", prom.Command, configPath)
		}
		mounts := prom.mounts()
		src, ok := mounts[configPath]
		if !ok {
			t.Fatalf("prometheus does not mount its config at %s", configPath)
		}
		if !exists(src) {
			t.Fatalf("prometheus mounts its config from %s, which does not exist", src)
		}
		var cfg struct {
			Global struct {
				ScrapeInterval string `yaml:"scrape_interval"`
			} `yaml:"global"`
			RuleFiles     []string `yaml:"rule_files"`
			ScrapeConfigs []struct {
				JobName       string `yaml:"job_name"`
				MetricsPath   string `yaml:"metrics_path"`
				StaticConfigs []struct {
					Targets []string `yaml:"targets"`
				} `yaml:"static_configs"`
			} `yaml:"scrape_configs"`
		}
		decodeYAML(t, src, &cfg)
		// Rule files are relative to the config file inside the container.
		for _, rf := range cfg.RuleFiles {
			p := rf
			if !path.IsAbs(p) {
				p = path.Join(path.Dir(configPath), p)
			}
			if strings.ContainsAny(p, "*?[") {
				matched := false
				for target := range mounts {
					if ok, _ := path.Match(p, target); ok {
						matched = true
					}
				}
				if !matched {
					t.Errorf("rule_files %q matches no file compose mounts into prometheus", rf)
				}
			} else if from, ok := mounts[p]; !ok {
				t.Errorf("rule_files %q is %s in the container, which compose does not mount", rf, p)
			} else if !exists(from) {
				t.Errorf("rule_files %q is mounted from %s, which does not exist", rf, from)
			}
		}
		// In its own network Prometheus reaches limitd by service name; in
		// limitd's network (network_mode: service:limitd), on loopback.
		port := portOf(t, env["LIMITD_ADDR"])
		want := []string{"limitd:" + port}
		if prom.NetworkMode == "service:limitd" {
			want = []string{"127.0.0.1:" + port, "localhost:" + port}
		}
		found := false
		for _, sc := range cfg.ScrapeConfigs {
			for _, st := range sc.StaticConfigs {
				if slices.ContainsFunc(st.Targets, func(s string) bool { return slices.Contains(want, s) }) {
					found = true
					if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
						t.Errorf("job %s scrapes %s, not /metrics", sc.JobName, sc.MetricsPath)
					}
					if job := downJob(t); sc.JobName != job {
						t.Errorf("job %s scrapes limitd, but LimitdDown selects job=%q: it would fire for ever", sc.JobName, job)
					}
				}
			}
		}
		if !found {
			t.Errorf("%s has no scrape target %s: Prometheus (network_mode %q) would not reach the limitd service", src, strings.Join(want, " or "), prom.NetworkMode)
		}
		// Grafana's $__rate_interval assumes this interval.
		interval := durationOr(t, cfg.Global.ScrapeInterval, time.Minute)
		var ds datasources
		decodeYAML(t, "grafana-provisioning/datasources/prometheus.yaml", &ds)
		for _, d := range ds.Datasources {
			if d.Type == "prometheus" && d.JSONData.TimeInterval != "" {
				if got := durationOr(t, d.JSONData.TimeInterval, 0); got != interval {
					t.Errorf("datasource %s has timeInterval %v, but Prometheus scrapes every %v", d.Name, got, interval)
				}
			}
		}
	})

	t.Run("GrafanaProvisionsTheDatasourceAndDashboard", func(t *testing.T) {
		checkGrafana(t, c)
	})
}

type datasources struct {
	Datasources []struct {
		Name      string `yaml:"name"`
		UID       string `yaml:"uid"`
		Type      string `yaml:"type"`
		URL       string `yaml:"url"`
		IsDefault bool   `yaml:"isDefault"`
		JSONData  struct {
			TimeInterval string `yaml:"timeInterval"`
		} `yaml:"jsonData"`
	} `yaml:"datasources"`
}

func checkGrafana(t *testing.T, c composeFile) {
	g := c.Services["grafana"]
	mounts := g.mounts()
	const provisioning = "/etc/grafana/provisioning"
	if mounts[provisioning+"/datasources"] == "" || mounts[provisioning+"/dashboards"] == "" {
		t.Fatalf("grafana does not mount both %s/datasources and %s/dashboards: %v", provisioning, provisioning, g.Volumes)
	}

	var ds datasources
	decodeYAML(t, filepath.Join(mounts[provisioning+"/datasources"], "prometheus.yaml"), &ds)
	uids := map[string]bool{}
	for _, d := range ds.Datasources {
		uids[d.UID] = true
		if d.Type != "prometheus" {
			continue
		}
		host := strings.TrimPrefix(strings.TrimPrefix(d.URL, "http://"), "https://")
		name, _, _ := strings.Cut(host, ":")
		// Prometheus answers at its own service name, or at the name of the
		// service whose network it shares.
		reachable := name == "prometheus" && c.Services["prometheus"].NetworkMode == ""
		reachable = reachable || c.Services["prometheus"].NetworkMode == "service:"+name
		if !reachable {
			t.Errorf("datasource %s points at %s, where the prometheus service (network_mode %q) does not listen",
				d.Name, d.URL, c.Services["prometheus"].NetworkMode)
		}
	}

	var providers struct {
		Providers []struct {
			Name    string `yaml:"name"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	decodeYAML(t, filepath.Join(mounts[provisioning+"/dashboards"], "limitd.yaml"), &providers)
	if len(providers.Providers) == 0 {
		t.Fatal("no dashboard provider")
	}
	dir := providers.Providers[0].Options.Path
	var dashTarget, dashSrc string
	for target, src := range mounts {
		if path.Dir(target) == dir && strings.HasSuffix(target, ".json") {
			dashTarget, dashSrc = target, src
		}
	}
	if dashTarget == "" {
		t.Fatalf("grafana mounts no dashboard JSON into the provider's folder %s", dir)
	}
	if home := g.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" && home != dashTarget {
		t.Errorf("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH=%s, but the dashboard is mounted at %s", home, dashTarget)
	}
	if !exists(dashSrc) {
		t.Fatalf("grafana mounts the dashboard from %s, which does not exist", dashSrc)
	}
	checkDashboardDatasources(t, dashSrc, uids)
}

// checkDashboardDatasources: a provisioned dashboard cannot ask for its
// datasource the way an exported one does (__inputs and ${DS_…} are
// resolved only by the import dialog), so every datasource it names must be
// a provisioned uid or one of its own datasource variables.
func checkDashboardDatasources(t *testing.T, file string, uids map[string]bool) {
	var dash map[string]any
	if err := json.Unmarshal(readFile(t, file), &dash); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	vars := map[string]bool{}
	if tmpl, ok := dash["templating"].(map[string]any); ok {
		list, _ := tmpl["list"].([]any)
		for _, v := range list {
			if m, ok := v.(map[string]any); ok && m["type"] == "datasource" {
				vars[fmt.Sprint(m["name"])] = true
			}
		}
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "datasource" {
					checkDatasourceRef(t, file, x, uids, vars)
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash["panels"])
	walk(dash["rows"])
	walk(dash["annotations"])
}

func checkDatasourceRef(t *testing.T, file string, ref any, uids, vars map[string]bool) {
	var s string
	switch r := ref.(type) {
	case nil:
		return // the default datasource
	case string:
		s = r
	case map[string]any:
		if r["type"] != nil && r["type"] != "prometheus" {
			return // Grafana's own (annotations), mixed, ...
		}
		if r["uid"] == nil {
			return
		}
		s = fmt.Sprint(r["uid"])
	}
	if name, ok := strings.CutPrefix(s, "$"); ok {
		name = strings.Trim(name, "{}")
		if !vars[name] {
			t.Errorf("%s: datasource %q is not a datasource variable of the dashboard; provisioning does not resolve import-time inputs", file, s)
		}
		return
	}
	if s != "" && !uids[s] && s != "-- Grafana --" && s != "-- Mixed --" && s != "-- Dashboard --" {
		t.Errorf("%s: datasource %q is not provisioned (provisioned uids: %v)", file, s, sortedKeys(uids))
	}
}

func TestPromtoolAcceptsTheScrapeConfig(t *testing.T) {
	const cfg = "prometheus/prometheus.yml"
	if !exists(cfg) {
		t.Fatalf("%s does not exist", cfg)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian: apt-get install prometheus)")
	}
	out, err := exec.Command(promtool, "check", "config", cfg).CombinedOutput()
	if err != nil {
		t.Errorf("promtool check config %s: %v\n%s", cfg, err, out)
	}
}

// ---- systemd -----------------------------------------------------------------

// unitFile is a systemd unit: section → key → values in order.
type unitFile map[string]map[string][]string

func (u unitFile) last(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func parseUnit(t *testing.T, p string) unitFile {
	t.Helper()
	u := unitFile{}
	section := ""
	for i, line := range strings.Split(string(readFile(t, p)), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", p, i+1, line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u
}

// parseEnvFile reads NAME=value lines; commented-out assignments are
// returned separately, since they document flags too.
func parseEnvFile(t *testing.T, p string) (set, commented map[string]string) {
	t.Helper()
	set, commented = map[string]string{}, map[string]string{}
	assign := regexp.MustCompile(`^#?\s*([A-Z_][A-Z0-9_]*)=(.*)$`)
	for _, line := range strings.Split(string(readFile(t, p)), "\n") {
		line = strings.TrimSpace(line)
		m := assign.FindStringSubmatch(line)
		switch {
		case m == nil:
			if line != "" && line[0] != '#' {
				t.Errorf("%s: not NAME=value: %q", p, line)
			}
		case line[0] == '#':
			commented[m[1]] = m[2]
		default:
			set[m[1]] = m[2]
		}
	}
	return set, commented
}

func TestSystemdUnitIsHardenedAndStopsGracefully(t *testing.T) {
	const unitPath = "systemd/limitd.service"
	u := parseUnit(t, unitPath)
	svc := u["Service"]
	if svc == nil {
		t.Fatal("no [Service] section")
	}
	envFile, _ := parseEnvFile(t, "systemd/limitd.env")
	env := map[string]string{}
	for _, e := range svc["Environment"] {
		for _, kv := range strings.Fields(e) {
			k, v, _ := strings.Cut(strings.Trim(kv, `"`), "=")
			env[k] = v
		}
	}
	// EnvironmentFile= wins over Environment=.
	for k, v := range envFile {
		env[k] = v
	}

	t.Run("Settings", func(t *testing.T) {
		want := map[string]string{
			"Type":            "simple",
			"DynamicUser":     "yes",
			"StateDirectory":  "limitd",
			"ExecStart":       "/usr/local/bin/limitd serve",
			"EnvironmentFile": "-/etc/limitd/limitd.env",
			"KillSignal":      "SIGTERM",
			"Restart":         "on-failure",
			"LimitNOFILE":     "65536",
		}
		for _, k := range sortedKeys(want) {
			if got := u.last("Service", k); got != want[k] {
				t.Errorf("%s=%q, want %q", k, got, want[k])
			}
		}
	})

	t.Run("Hardening", func(t *testing.T) {
		want := map[string]string{
			"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
			"PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
			"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "MemoryDenyWriteExecute": "yes",
			"LockPersonality": "yes", "RestrictNamespaces": "yes", "ProtectKernelTunables": "yes",
			"ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
			"SystemCallArchitectures": "native",
		}
		for _, k := range sortedKeys(want) {
			if _, ok := svc[k]; !ok {
				t.Errorf("%s= is missing", k)
			} else if got := u.last("Service", k); got != want[k] {
				t.Errorf("%s=%q, want %q", k, got, want[k])
			}
		}
		if !slices.Contains(svc["SystemCallFilter"], "@system-service") {
			t.Errorf("SystemCallFilter=%q does not allow-list @system-service", svc["SystemCallFilter"])
		}
	})

	t.Run("TimeoutStopSecExceedsShutdownGrace", func(t *testing.T) {
		stop := systemdSeconds(t, u.last("Service", "TimeoutStopSec"))
		if grace := shutdownGrace(t, env); stop <= grace {
			t.Errorf("TimeoutStopSec=%v must exceed LIMITD_SHUTDOWN_GRACE %v, or systemd kills limitd mid-drain", stop, grace)
		}
	})

	t.Run("DatabaseInTheStateDirectory", func(t *testing.T) {
		state := "/var/lib/" + u.last("Service", "StateDirectory")
		db := env["LIMITD_DB"]
		if db == "" {
			t.Fatal("LIMITD_DB is not set: limitd would write ./limitd.db in a read-only working directory")
		}
		if mountHolding([]string{state}, path.Dir(db)) == "" {
			t.Errorf("LIMITD_DB=%s is outside the state directory %s, the only writable place (ProtectSystem=strict)", db, state)
		}
	})

	t.Run("RefusesNoAuthUnlessToldOtherwise", func(t *testing.T) {
		checkAuthRule(t, "the unit with its env file", env)
	})

	t.Run("EnvFileNamesRealFlags", func(t *testing.T) {
		set, commented := parseEnvFile(t, "systemd/limitd.env")
		checkKnownEnv(t, "systemd/limitd.env", set, commented)
	})

	t.Run("SystemdAnalyzeVerify", func(t *testing.T) {
		tool, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze is not installed")
		}
		unit := testableUnit(t, unitPath)
		out, err := exec.Command(tool, "verify", unit).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})

	t.Run("SystemdAnalyzeSecurityExposureAtMost2", func(t *testing.T) {
		tool, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze is not installed")
		}
		unit := testableUnit(t, unitPath)
		// --threshold counts tenths: exposure 2.0 ("OK") at most.
		out, err := exec.Command(tool, "security", "--offline=yes", "--threshold=20", "--no-pager", unit).CombinedOutput()
		if err != nil && bytes.Contains(out, []byte("unrecognized option")) {
			t.Skipf("this systemd-analyze cannot analyze offline: %s", bytes.TrimSpace(out))
		}
		if err != nil {
			t.Errorf("systemd-analyze security: exposure above 2.0 or failure: %v\n%s", err, out)
		}
	})
}

// testableUnit copies the unit under its own name to a temporary directory,
// with ExecStart pointing at an executable that exists here (verify checks
// that the command exists; it is installed in /usr/local/bin only on a
// server).
func testableUnit(t *testing.T, unitPath string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(readFile(t, unitPath)), "ExecStart=/usr/local/bin/limitd ", "ExecStart="+self+" ")
	p := filepath.Join(t.TempDir(), filepath.Base(unitPath))
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// systemdSeconds reads a systemd time span: "30", "30s", "1min 30s".
func systemdSeconds(t *testing.T, s string) time.Duration {
	t.Helper()
	if s == "" {
		return 90 * time.Second // DefaultTimeoutStopSec
	}
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second
	}
	r := strings.NewReplacer(" ", "", "min", "m", "sec", "s", "hour", "h")
	d, err := time.ParseDuration(r.Replace(s))
	if err != nil {
		t.Fatalf("time span %q: %v", s, err)
	}
	return d
}

// ---- Kubernetes ------------------------------------------------------------

type k8sMeta struct {
	Name        string            `yaml:"name"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type k8sObject struct {
	APIVersion string  `yaml:"apiVersion"`
	Kind       string  `yaml:"kind"`
	Metadata   k8sMeta `yaml:"metadata"`
	file       string
	node       *yaml.Node
}

type probe struct {
	HTTPGet *struct {
		Path   string `yaml:"path"`
		Port   any    `yaml:"port"`
		Scheme string `yaml:"scheme"`
	} `yaml:"httpGet"`
	TCPSocket any `yaml:"tcpSocket"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	StartupProbe   *probe `yaml:"startupProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type statefulSet struct {
	Spec struct {
		Replicas    *int   `yaml:"replicas"`
		ServiceName string `yaml:"serviceName"`
		Selector    struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata k8sMeta `yaml:"metadata"`
			Spec     struct {
				TerminationGracePeriodSeconds *int  `yaml:"terminationGracePeriodSeconds"`
				EnableServiceLinks            *bool `yaml:"enableServiceLinks"`
				SecurityContext               struct {
					RunAsNonRoot *bool `yaml:"runAsNonRoot"`
					RunAsUser    *int  `yaml:"runAsUser"`
					FSGroup      *int  `yaml:"fsGroup"`
				} `yaml:"securityContext"`
				Containers []container `yaml:"containers"`
				Volumes    []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
					EmptyDir              any `yaml:"emptyDir"`
					PersistentVolumeClaim any `yaml:"persistentVolumeClaim"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata k8sMeta `yaml:"metadata"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type service struct {
	Spec struct {
		ClusterIP string            `yaml:"clusterIP"`
		Selector  map[string]string `yaml:"selector"`
		Ports     []servicePort     `yaml:"ports"`
	} `yaml:"spec"`
}

type servicePort struct {
	Name       string `yaml:"name"`
	Port       int    `yaml:"port"`
	TargetPort any    `yaml:"targetPort"`
}

type serviceMonitor struct {
	Spec struct {
		JobLabel string `yaml:"jobLabel"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Endpoints []struct {
			Port   string `yaml:"port"`
			Path   string `yaml:"path"`
			Scheme string `yaml:"scheme"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

type k8sManifests struct {
	objects []k8sObject
}

func (m k8sManifests) kind(kind string) []k8sObject {
	var out []k8sObject
	for _, o := range m.objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func (m k8sManifests) one(t *testing.T, kind string, out any) k8sObject {
	t.Helper()
	objs := m.kind(kind)
	if len(objs) != 1 {
		t.Fatalf("want exactly one %s in deploy/kubernetes, found %d", kind, len(objs))
	}
	if err := objs[0].node.Decode(out); err != nil {
		t.Fatalf("%s %s (%s): %v", kind, objs[0].Metadata.Name, objs[0].file, err)
	}
	return objs[0]
}

func (m k8sManifests) named(t *testing.T, kind, name string) (k8sObject, bool) {
	t.Helper()
	for _, o := range m.kind(kind) {
		if o.Metadata.Name == name {
			return o, true
		}
	}
	return k8sObject{}, false
}

func loadKubernetes(t *testing.T) k8sManifests {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var m k8sManifests
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		for _, n := range readYAML(t, f) {
			var o k8sObject
			if err := n.Decode(&o); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "" || o.APIVersion == "" || o.Metadata.Name == "" {
				t.Fatalf("%s: a document without apiVersion, kind or metadata.name", f)
			}
			o.file, o.node = f, n
			m.objects = append(m.objects, o)
		}
	}
	return m
}

func TestKubernetesManifests(t *testing.T) {
	m := loadKubernetes(t)
	var sts statefulSet
	stsObj := m.one(t, "StatefulSet", &sts)
	pod := sts.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("the pod has %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	env := containerEnv(t, m, c)
	port := portOf(t, env["LIMITD_ADDR"])

	t.Run("OneReplica", func(t *testing.T) {
		// Two replicas would each hand out every limit's full capacity.
		switch r := sts.Spec.Replicas; {
		case r == nil:
			t.Error("replicas is not set: say 1 explicitly")
		case *r != 1:
			t.Errorf("replicas %d: must be exactly 1", *r)
		}
		if !strings.Contains(string(readFile(t, stsObj.file)), "over-admission") {
			t.Errorf("%s does not say why there is one replica", stsObj.file)
		}
	})

	t.Run("ContainerPortIsTheListenPort", func(t *testing.T) {
		if port != portOf(t, defaultAddr) {
			t.Errorf("LIMITD_ADDR=%s: port differs from limitd's default %s", env["LIMITD_ADDR"], defaultAddr)
		}
		if p, ok := containerPort(c, port); !ok || strconv.Itoa(p) != port {
			t.Errorf("container ports %+v do not include the listen port %s", c.Ports, port)
		}
		if a := sts.Spec.Template.Metadata.Annotations["prometheus.io/port"]; a != "" && a != port {
			t.Errorf("annotation prometheus.io/port=%s, but limitd listens on %s", a, port)
		}
	})

	t.Run("ProbesHitRealRoutes", func(t *testing.T) {
		probes := map[string]*probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe}
		want := map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
		for _, name := range sortedKeys(probes) {
			p := probes[name]
			if p == nil || p.HTTPGet == nil {
				t.Errorf("%s: missing or not httpGet", name)
				continue
			}
			if !slices.Contains(routes(t), "GET "+p.HTTPGet.Path) {
				t.Errorf("%s GET %s: no such route", name, p.HTTPGet.Path)
			}
			if w, ok := want[name]; ok && p.HTTPGet.Path != w {
				t.Errorf("%s on %s, want %s", name, p.HTTPGet.Path, w)
			}
			if got, ok := resolvePort(c, p.HTTPGet.Port); !ok || strconv.Itoa(got) != port {
				t.Errorf("%s port %v is not the listen port %s", name, p.HTTPGet.Port, port)
			}
			if _, tls := env["LIMITD_TLS_CERT"]; tls && p.HTTPGet.Scheme != "HTTPS" {
				t.Errorf("%s is plain HTTP but LIMITD_TLS_CERT is set", name)
			}
		}
	})

	t.Run("TerminationGraceExceedsShutdownGrace", func(t *testing.T) {
		tg := 30 * time.Second // Kubernetes' default
		if pod.TerminationGracePeriodSeconds != nil {
			tg = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
		}
		if grace := shutdownGrace(t, env); tg <= grace {
			t.Errorf("terminationGracePeriodSeconds %v must exceed LIMITD_SHUTDOWN_GRACE %v", tg, grace)
		}
	})

	t.Run("DatabaseOnThePersistentVolume", func(t *testing.T) {
		db := env["LIMITD_DB"]
		claims := map[string]bool{}
		for _, vct := range sts.Spec.VolumeClaimTemplates {
			claims[vct.Metadata.Name] = true
		}
		ok := false
		for _, vm := range c.VolumeMounts {
			if claims[vm.Name] && mountHolding([]string{path.Clean(vm.MountPath)}, path.Dir(db)) != "" {
				ok = !vm.ReadOnly
			}
		}
		if !ok {
			t.Errorf("LIMITD_DB=%s: its directory is not on a writable volume of volumeClaimTemplates %v", db, sortedKeys(claims))
		}
	})

	t.Run("TokensFileFromTheSecret", func(t *testing.T) {
		tf := env["LIMITD_TOKENS_FILE"]
		if tf == "" {
			t.Skip("no tokens file configured")
		}
		var secretName string
		for _, vm := range c.VolumeMounts {
			if path.Clean(vm.MountPath) != path.Dir(tf) {
				continue
			}
			for _, v := range pod.Volumes {
				if v.Name == vm.Name && v.Secret != nil {
					secretName = v.Secret.SecretName
				}
			}
		}
		if secretName == "" {
			t.Fatalf("LIMITD_TOKENS_FILE=%s is not in a directory mounted from a Secret", tf)
		}
		data := secretData(t, m, secretName)
		if _, ok := data[path.Base(tf)]; !ok {
			t.Errorf("Secret %s has no key %q (keys %v)", secretName, path.Base(tf), sortedKeys(data))
		}
	})

	t.Run("RefusesNoAuthUnlessToldOtherwise", func(t *testing.T) {
		checkAuthRule(t, "the StatefulSet's environment", env)
	})

	t.Run("NoServiceLinksIntoTheLimitdEnvNamespace", func(t *testing.T) {
		// Kubernetes injects NAME_PORT, NAME_SERVICE_HOST, ... for every
		// Service; a Service named limitd would write into limitd's flags.
		for _, s := range m.kind("Service") {
			prefix := strings.ToUpper(strings.ReplaceAll(s.Metadata.Name, "-", "_")) + "_"
			if strings.HasPrefix(prefix, "LIMITD_") && (pod.EnableServiceLinks == nil || *pod.EnableServiceLinks) {
				t.Errorf("Service %s makes Kubernetes set %s* variables in the pod: set enableServiceLinks: false", s.Metadata.Name, prefix)
			}
		}
	})

	t.Run("SecurityContext", func(t *testing.T) {
		psc, csc := pod.SecurityContext, c.SecurityContext
		if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
			t.Error("runAsNonRoot is not true")
		}
		if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
			t.Error("runAsUser 0")
		}
		if psc.FSGroup == nil {
			t.Error("no fsGroup: the volume may not be writable by the non-root user")
		}
		if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
			t.Error("readOnlyRootFilesystem is not true")
		}
		if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
			t.Error("allowPrivilegeEscalation is not false")
		}
		if !slices.Contains(csc.Capabilities.Drop, "ALL") {
			t.Error("capabilities do not drop ALL")
		}
	})

	t.Run("Resources", func(t *testing.T) {
		if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" {
			t.Errorf("resource requests %v: want cpu and memory", c.Resources.Requests)
		}
		if c.Resources.Limits["memory"] == "" {
			t.Errorf("no memory limit")
		}
	})

	t.Run("ServicesSelectThePod", func(t *testing.T) {
		podLabels := sts.Spec.Template.Metadata.Labels
		if !subset(sts.Spec.Selector.MatchLabels, podLabels) {
			t.Errorf("StatefulSet selector %v does not match its pod labels %v", sts.Spec.Selector.MatchLabels, podLabels)
		}
		headless, ok := m.named(t, "Service", sts.Spec.ServiceName)
		if !ok {
			t.Errorf("serviceName %q: no such Service", sts.Spec.ServiceName)
		} else {
			var s service
			if err := headless.node.Decode(&s); err != nil {
				t.Fatal(err)
			}
			if s.Spec.ClusterIP != "None" {
				t.Errorf("Service %s (the StatefulSet's serviceName) is not headless", sts.Spec.ServiceName)
			}
		}
		for _, o := range m.kind("Service") {
			var s service
			if err := o.node.Decode(&s); err != nil {
				t.Fatal(err)
			}
			if !subset(s.Spec.Selector, podLabels) {
				t.Errorf("Service %s selects %v, not the pod (%v)", o.Metadata.Name, s.Spec.Selector, podLabels)
			}
			for _, p := range s.Spec.Ports {
				if got, ok := resolvePort(c, p.TargetPort); !ok || strconv.Itoa(got) != port {
					t.Errorf("Service %s port %s targets %v, not the listen port %s", o.Metadata.Name, p.Name, p.TargetPort, port)
				}
			}
		}
	})

	t.Run("ServiceMonitorScrapesOneServiceOnce", func(t *testing.T) {
		var sm serviceMonitor
		smObj := m.one(t, "ServiceMonitor", &sm)
		if smObj.APIVersion != "monitoring.coreos.com/v1" {
			t.Errorf("ServiceMonitor apiVersion %s", smObj.APIVersion)
		}
		var matched []service
		var names []string
		var objs []k8sObject
		for _, o := range m.kind("Service") {
			if subset(sm.Spec.Selector.MatchLabels, o.Metadata.Labels) {
				var s service
				if err := o.node.Decode(&s); err != nil {
					t.Fatal(err)
				}
				matched = append(matched, s)
				names = append(names, o.Metadata.Name)
				objs = append(objs, o)
			}
		}
		if len(matched) != 1 {
			t.Fatalf("the ServiceMonitor selects Services %v: want exactly one, or every series is scraped twice", names)
		}
		// The Prometheus Operator names the job after the Service, or after
		// the value of the Service's label that spec.jobLabel names.
		job := names[0]
		if sm.Spec.JobLabel != "" {
			job = objs[0].Metadata.Labels[sm.Spec.JobLabel]
		}
		if want := downJob(t); job != want {
			t.Errorf("the ServiceMonitor's targets get job=%q, but LimitdDown selects job=%q: it would fire for ever", job, want)
		}
		for _, ep := range sm.Spec.Endpoints {
			if !slices.Contains(routes(t), "GET "+ep.Path) {
				t.Errorf("ServiceMonitor path %q is no route", ep.Path)
			}
			if !slices.ContainsFunc(matched[0].Spec.Ports, func(p servicePort) bool { return p.Name == ep.Port }) {
				t.Errorf("ServiceMonitor port %q is not a port of Service %s", ep.Port, names[0])
			}
		}
	})

	t.Run("PodDisruptionBudgetNote", func(t *testing.T) {
		var pdb struct {
			Spec struct {
				MaxUnavailable any `yaml:"maxUnavailable"`
				Selector       struct {
					MatchLabels map[string]string `yaml:"matchLabels"`
				} `yaml:"selector"`
			} `yaml:"spec"`
		}
		o := m.one(t, "PodDisruptionBudget", &pdb)
		if !subset(pdb.Spec.Selector.MatchLabels, sts.Spec.Template.Metadata.Labels) {
			t.Errorf("the PDB selects %v, not the pod", pdb.Spec.Selector.MatchLabels)
		}
		if fmt.Sprint(pdb.Spec.MaxUnavailable) == "0" && !strings.Contains(string(readFile(t, o.file)), "drain") {
			t.Errorf("%s has maxUnavailable: 0 without explaining that it blocks node drains", o.file)
		}
	})

	t.Run("KustomizationListsTheManifests", func(t *testing.T) {
		const kf = "kubernetes/kustomization.yaml"
		var k struct {
			Resources []string `yaml:"resources"`
			Images    []struct {
				Name string `yaml:"name"`
			} `yaml:"images"`
		}
		decodeYAML(t, kf, &k)
		for _, r := range k.Resources {
			if !exists(filepath.Join("kubernetes", r)) {
				t.Errorf("%s lists %s, which does not exist", kf, r)
			}
		}
		// Opt-in manifests are named in a comment; none may be forgotten.
		text := string(readFile(t, kf))
		files, _ := filepath.Glob("kubernetes/*.yaml")
		for _, f := range files {
			if b := filepath.Base(f); b != "kustomization.yaml" && !strings.Contains(text, b) {
				t.Errorf("%s never mentions %s", kf, b)
			}
		}
		for _, img := range k.Images {
			if img.Name != strings.Split(c.Image, ":")[0] {
				t.Errorf("%s rewrites image %q, but the container's image is %q", kf, img.Name, c.Image)
			}
		}
	})

	t.Run("KubectlKustomizeBuilds", func(t *testing.T) {
		kubectl, err := exec.LookPath("kubectl")
		if err != nil {
			t.Skip("kubectl is not installed")
		}
		out, err := exec.Command(kubectl, "kustomize", "kubernetes").Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				err = fmt.Errorf("%v: %s", err, ee.Stderr)
			}
			t.Fatalf("kubectl kustomize: %v", err)
		}
		if !bytes.Contains(out, []byte("kind: StatefulSet")) {
			t.Errorf("kubectl kustomize rendered no StatefulSet:\n%s", out)
		}
	})
}

// containerEnv is the container's environment: envFrom ConfigMaps, then
// env entries over them.
func containerEnv(t *testing.T, m k8sManifests, c container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		o, ok := m.named(t, "ConfigMap", ef.ConfigMapRef.Name)
		if !ok {
			t.Fatalf("envFrom names ConfigMap %q, which is not in deploy/kubernetes", ef.ConfigMapRef.Name)
		}
		var cm struct {
			Data map[string]string `yaml:"data"`
		}
		if err := o.node.Decode(&cm); err != nil {
			t.Fatal(err)
		}
		for k, v := range cm.Data {
			env[k] = v
		}
	}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	return env
}

func secretData(t *testing.T, m k8sManifests, name string) map[string]string {
	t.Helper()
	o, ok := m.named(t, "Secret", name)
	if !ok {
		t.Fatalf("Secret %q is not in deploy/kubernetes", name)
	}
	var s struct {
		StringData map[string]string `yaml:"stringData"`
		Data       map[string]string `yaml:"data"`
	}
	if err := o.node.Decode(&s); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = v // base64; only the keys matter here
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	return out
}

func containerPort(c container, port string) (int, bool) {
	for _, p := range c.Ports {
		if strconv.Itoa(p.ContainerPort) == port {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// resolvePort turns a port name or number into the container's port number.
func resolvePort(c container, port any) (int, bool) {
	switch p := port.(type) {
	case int:
		return p, true
	case string:
		for _, cp := range c.Ports {
			if cp.Name == p {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

func subset(want, have map[string]string) bool {
	if len(want) == 0 {
		return false
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// ---- the rules every deployment shares -----------------------------------

// checkAuthRule applies limitd's safe default to a deployment's environment:
// a non-loopback --addr needs --tokens-file, or --insecure-no-auth said out
// loud, and the two together are refused as a contradiction.
func checkAuthRule(t *testing.T, where string, env map[string]string) {
	t.Helper()
	addr := env["LIMITD_ADDR"]
	if addr == "" {
		addr = defaultAddr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: LIMITD_ADDR=%q: %v", where, addr, err)
	}
	ip := net.ParseIP(host)
	loopback := host == "localhost" || (ip != nil && ip.IsLoopback())
	tokens, insecure := env["LIMITD_TOKENS_FILE"] != "", isTrue(env["LIMITD_INSECURE_NO_AUTH"])
	switch {
	case tokens && insecure:
		t.Errorf("%s sets both LIMITD_TOKENS_FILE and LIMITD_INSECURE_NO_AUTH: limitd refuses to start", where)
	case !loopback && !tokens && !insecure:
		t.Errorf("%s listens on %s without LIMITD_TOKENS_FILE or LIMITD_INSECURE_NO_AUTH: limitd refuses to start", where, addr)
	}
	for k := range env {
		if strings.HasPrefix(k, "LIMITD_") && !isKnownEnv(k) {
			t.Errorf("%s sets %s, which is no flag of limitd serve", where, k)
		}
	}
}

func isKnownEnv(name string) bool {
	for _, f := range serveFlags() {
		if envName(f) == name {
			return true
		}
	}
	return slices.Contains(clientEnv(), name)
}

func checkKnownEnv(t *testing.T, where string, maps ...map[string]string) {
	t.Helper()
	for _, m := range maps {
		for k := range m {
			if !isKnownEnv(k) {
				t.Errorf("%s names %s, which is no flag of limitd serve", where, k)
			}
		}
	}
}

func shutdownGrace(t *testing.T, env map[string]string) time.Duration {
	t.Helper()
	return durationOr(t, env["LIMITD_SHUTDOWN_GRACE"], defaultShutdownGrace)
}

func isTrue(s string) bool {
	b, err := strconv.ParseBool(s)
	return err == nil && b
}

// ---- Makefile and release builds ------------------------------------------

// makeVar reads NAME := value (or = or ?=) from the Makefile.
func makeVar(t *testing.T, name string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + name + `\s*[:?]?=\s*(.*)$`)
	m := re.FindSubmatch(readFile(t, "../Makefile"))
	if m == nil {
		t.Fatalf("the Makefile does not set %s", name)
	}
	return strings.TrimSpace(string(m[1]))
}

func TestMakefile(t *testing.T) {
	text := string(readFile(t, "../Makefile"))
	for _, target := range []string{"build", "test", "release", "clean"} {
		if !regexp.MustCompile(`(?m)^` + target + `:`).MatchString(text) {
			t.Errorf("the Makefile has no %s target", target)
		}
	}
	if got := strings.Fields(makeVar(t, "PLATFORMS")); !slices.Equal(got, releaseTargets()) {
		t.Errorf("PLATFORMS = %v, want %v", got, releaseTargets())
	}
	if !strings.Contains(makeVar(t, "VERSION"), "git describe --tags --always --dirty") {
		t.Errorf("VERSION does not come from git describe --tags --always --dirty")
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=$(VERSION)", "go test -race ./...", "SHA256SUMS"} {
		if !strings.Contains(strings.ReplaceAll(text, "$(GO)", "go"), want) {
			t.Errorf("the Makefile never says %q", want)
		}
	}
}

// goBuildArgs are the Makefile's build flags for a version, so the tests
// build what "make release" builds (and share the build cache with it).
func goBuildArgs(version, out string) []string {
	return []string{"build", "-trimpath", "-ldflags", "-s -w -X main.version=" + version, "-o", out, "./cmd/limitd"}
}

func TestReleaseTargetsCrossCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiling three targets takes minutes on a cold cache (skipped with -short)")
	}
	ctx := buildContext(t)
	dir := t.TempDir()
	for _, target := range releaseTargets() {
		goos, goarch, _ := strings.Cut(target, "/")
		t.Run(goos+"_"+goarch, func(t *testing.T) {
			out := filepath.Join(dir, "limitd_"+goos+"_"+goarch)
			cmd := exec.CommandContext(ctx, goTool(t), goBuildArgs("v0.0.0-test", out)...)
			cmd.Dir = ".."
			cmd.Env = append(cleanEnv(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
			if b, err := cmd.CombinedOutput(); err != nil {
				skipIfOutOfTime(t, ctx)
				t.Fatalf("GOOS=%s GOARCH=%s go build: %v\n%s", goos, goarch, err, b)
			}
			if goos == runtime.GOOS && goarch == runtime.GOARCH {
				got, err := exec.Command(out, "version").Output()
				if err != nil || strings.TrimSpace(string(got)) != "limitd v0.0.0-test" {
					t.Errorf("limitd version = %q, %v; want the version stamped by -ldflags", got, err)
				}
			}
		})
	}
}

func TestMakeReleaseWritesChecksums(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three targets (skipped with -short)")
	}
	mk, err := exec.LookPath("make")
	if err != nil {
		t.Skip("make is not installed")
	}
	ctx := buildContext(t)
	dist := t.TempDir()
	cmd := exec.CommandContext(ctx, mk, "release", "DIST="+dist, "VERSION=v0.0.0-test", "GO="+goTool(t))
	cmd.Dir = ".."
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		skipIfOutOfTime(t, ctx)
		t.Fatalf("make release: %v\n%s", err, out)
	}
	sums := strings.Split(strings.TrimSpace(string(readFile(t, filepath.Join(dist, "SHA256SUMS")))), "\n")
	var names []string
	for _, line := range sums {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q", line)
		}
		h := sha256.Sum256(readFile(t, filepath.Join(dist, name)))
		if hex.EncodeToString(h[:]) != sum {
			t.Errorf("SHA256SUMS is wrong for %s", name)
		}
		names = append(names, name)
	}
	var want []string
	for _, target := range releaseTargets() {
		want = append(want, "limitd_v0.0.0-test_"+strings.ReplaceAll(target, "/", "_"))
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("SHA256SUMS lists %v, want %v", names, want)
	}
}

// buildContext ends a little before the test binary's deadline, so a slow
// cold build is reported instead of panicking the whole package.
func buildContext(t *testing.T) context.Context {
	t.Helper()
	ctx := t.Context()
	if d, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.Add(-30*time.Second))
		t.Cleanup(cancel)
	}
	return ctx
}

func skipIfOutOfTime(t *testing.T, ctx context.Context) {
	t.Helper()
	if ctx.Err() != nil {
		t.Skip("the build did not finish before the test deadline; run make release to check it")
	}
}

// ---- the binary, run as the deployments run it ------------------------------

func goTool(t *testing.T) string {
	t.Helper()
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	p, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build limitd with")
	}
	return p
}

// cleanEnv is this process's environment without LIMITD_ variables, so a
// developer's settings do not leak into the binaries under test.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LIMITD_") {
			env = append(env, kv)
		}
	}
	return env
}

// buildLimitd builds the daemon for this machine with the release flags.
func buildLimitd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "limitd")
	cmd := exec.Command(goTool(t), goBuildArgs("v0.0.0-test", bin)...)
	cmd.Dir = ".."
	cmd.Env = append(cleanEnv(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/limitd: %v\n%s", err, out)
	}
	return bin
}

type result struct {
	code           int
	stdout, stderr string
}

func runLimitd(t *testing.T, bin string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("limitd %v: %v", args, err)
	}
	return result{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

func TestFlagDefaultsAreWhatDeployAssumes(t *testing.T) {
	bin := buildLimitd(t)
	r := runLimitd(t, bin, nil, "serve", "-h")
	if r.code != 0 {
		t.Fatalf("limitd serve -h: exit %d\n%s", r.code, r.stderr)
	}
	flags := map[string]string{} // name → default ("" when none is printed)
	re := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	for _, m := range re.FindAllStringSubmatchIndex(r.stderr, -1) {
		name := r.stderr[m[2]:m[3]]
		rest := r.stderr[m[1]:]
		if next := re.FindStringIndex(rest); next != nil {
			rest = rest[:next[0]]
		}
		def := ""
		if d := regexp.MustCompile(`\(default "?([^")]*)"?\)`).FindStringSubmatch(rest); d != nil {
			def = d[1]
		}
		flags[name] = def
	}
	if flags["addr"] != defaultAddr {
		t.Errorf("--addr defaults to %q; deploy/ assumes %q", flags["addr"], defaultAddr)
	}
	if got := durationOr(t, flags["shutdown-grace"], 0); got != defaultShutdownGrace {
		t.Errorf("--shutdown-grace defaults to %v; deploy/ assumes %v", got, defaultShutdownGrace)
	}
	for _, f := range serveFlags() {
		if _, ok := flags[f]; !ok {
			t.Errorf("deploy/ relies on flag --%s (%s), which limitd serve does not have", f, envName(f))
		}
	}

	r = runLimitd(t, bin, nil, "health", "-h")
	if !strings.Contains(r.stderr, "(default "+healthTimeout.String()+")") {
		t.Errorf("limitd health -h does not show a default --timeout of %v:\n%s", healthTimeout, r.stderr)
	}
}

// TestImageEnvironmentServesAndPassesItsHealthcheck runs the binary with the
// image's environment (on loopback: a test may not listen elsewhere) and the
// shipped Kubernetes tokens Secret as its tokens file, runs the image's
// HEALTHCHECK command against it as Docker would, and stops it with the
// image's STOPSIGNAL.
func TestImageEnvironmentServesAndPassesItsHealthcheck(t *testing.T) {
	bin := buildLimitd(t)
	final := parseDockerfile(t, "docker/Dockerfile")
	stage := final.stages[len(final.stages)-1]
	imageEnv := stage.env()

	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	secret := secretData(t, loadKubernetes(t), "limitd-tokens")["tokens"]
	if err := os.WriteFile(tokens, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for k, v := range imageEnv {
		env[k] = v
	}
	env["LIMITD_ADDR"] = "127.0.0.1:0"
	env["LIMITD_DB"] = filepath.Join(dir, "state", path.Base(imageEnv["LIMITD_DB"]))
	env["LIMITD_TOKENS_FILE"] = tokens
	env["LIMITD_LOG_FORMAT"] = "json"
	if err := os.Mkdir(filepath.Dir(env["LIMITD_DB"]), 0o700); err != nil {
		t.Fatal(err)
	}

	srv := startServer(t, bin, env)

	// Docker runs the check with the container's environment, where
	// LIMITD_ADDR is the image's 0.0.0.0:PORT.
	_, port, _ := net.SplitHostPort(srv.addr)
	host, _, _ := net.SplitHostPort(imageEnv["LIMITD_ADDR"])
	checkEnv := map[string]string{}
	for k, v := range imageEnv {
		checkEnv[k] = v
	}
	checkEnv["LIMITD_ADDR"] = net.JoinHostPort(host, port)
	cmd, _ := stage.healthcheck(t)
	r := runLimitd(t, bin, envList(checkEnv), cmd[1:]...)
	if r.code != 0 {
		t.Errorf("HEALTHCHECK %q with LIMITD_ADDR=%s: exit %d\nstdout: %s\nstderr: %s", cmd, checkEnv["LIMITD_ADDR"], r.code, r.stdout, r.stderr)
	}

	// The API is closed to strangers: the tokens file is in force.
	resp, err := http.Get("http://" + srv.addr + "/v1/limits")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/limits without a token: %s, want 401", resp.Status)
	}

	// Kubelet probes and Prometheus scrapes carry no token, and the server
	// is loaded and not draining: every path they ask answers 200.
	for _, p := range probedPaths(t) {
		resp, err := http.Get("http://" + srv.addr + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a token: %s %s, want 200", p, resp.Status, body)
		}
	}

	sig := map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT}[stage.last("STOPSIGNAL")]
	if sig == 0 {
		t.Fatalf("STOPSIGNAL %q is not a graceful stop of limitd", stage.last("STOPSIGNAL"))
	}
	code, took := srv.stop(t, sig, shutdownGrace(t, imageEnv)+5*time.Second)
	if code != 0 {
		t.Errorf("after %s limitd exited %d, want 0\n%s", stage.last("STOPSIGNAL"), code, srv.logs())
	}
	t.Logf("stopped in %v", took)
}

// probedPaths are the paths that the shipped files make something other
// than a worker ask: the StatefulSet's probes, the ServiceMonitor's and the
// scrape config's metrics paths.
func probedPaths(t *testing.T) []string {
	t.Helper()
	seen := map[string]bool{}
	m := loadKubernetes(t)
	var sts statefulSet
	m.one(t, "StatefulSet", &sts)
	for _, c := range sts.Spec.Template.Spec.Containers {
		for _, p := range []*probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
			if p != nil && p.HTTPGet != nil {
				seen[p.HTTPGet.Path] = true
			}
		}
	}
	var sm serviceMonitor
	m.one(t, "ServiceMonitor", &sm)
	for _, ep := range sm.Spec.Endpoints {
		seen[cmp.Or(ep.Path, "/metrics")] = true
	}
	var cfg struct {
		ScrapeConfigs []struct {
			MetricsPath string `yaml:"metrics_path"`
		} `yaml:"scrape_configs"`
	}
	decodeYAML(t, "prometheus/prometheus.yml", &cfg)
	for _, sc := range cfg.ScrapeConfigs {
		seen[cmp.Or(sc.MetricsPath, "/metrics")] = true
	}
	for _, want := range []string{"/healthz", "/readyz", "/metrics"} {
		if !seen[want] {
			t.Errorf("nothing in deploy/ probes or scrapes %s", want)
		}
	}
	return sortedKeys(seen)
}

type server struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
	log  *bytes.Buffer // written only until done is closed
}

func (s *server) logs() string {
	<-s.done
	return s.log.String()
}

// startServer runs "limitd serve" and waits for its "limitd ready" log line.
func startServer(t *testing.T, bin string, env map[string]string) *server {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(cleanEnv(), envList(env)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, done: make(chan struct{}), log: &bytes.Buffer{}}
	ready := make(chan string, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			s.log.Write(append(sc.Bytes(), '\n'))
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "limitd ready" {
				select {
				case ready <- line.Addr:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-s.done
			cmd.Wait()
		}
	})
	select {
	case s.addr = <-ready:
		return s
	case <-s.done:
		cmd.Wait()
		t.Fatalf("limitd exited before it was ready:\n%s", s.log)
	case <-time.After(15 * time.Second):
		t.Fatal("limitd did not log \"limitd ready\" within 15s")
	}
	return nil
}

// stop sends sig and waits up to limit for the exit.
func (s *server) stop(t *testing.T, sig os.Signal, limit time.Duration) (code int, took time.Duration) {
	t.Helper()
	start := time.Now()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(limit):
		t.Fatalf("limitd did not exit within %v of %v", limit, sig)
	}
	s.cmd.Wait()
	return s.cmd.ProcessState.ExitCode(), time.Since(start)
}

func envList(m map[string]string) []string {
	var out []string
	for _, k := range sortedKeys(m) {
		out = append(out, k+"="+m[k])
	}
	return out
}

func TestHealthCommand(t *testing.T) {
	bin := buildLimitd(t)

	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || r.Method != http.MethodGet {
			http.Error(w, "wrong request "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		w.Write([]byte(`{"status":"ok"}`))
	}))
	defer ok.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"status":503,"code":"shutting_down","detail":"limitd is shutting down"}`))
	}))
	defer down.Close()
	redirect := httptest.NewServer(http.RedirectHandler(ok.URL+"/healthz", http.StatusFound))
	defer redirect.Close()
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // the client gives up
	}))
	defer hang.Close()
	okAddr := strings.TrimPrefix(ok.URL, "http://")
	_, okPort, _ := net.SplitHostPort(okAddr)

	for _, tc := range []struct {
		name    string
		env     []string
		args    []string
		code    int
		message string
	}{
		{"OK", nil, []string{"--server", ok.URL}, 0, ""},
		{"OKQuietPrintsNothing", nil, []string{"-q", "--server", ok.URL}, 0, ""},
		{"ErrNotHealthySaysWhy", nil, []string{"--server", down.URL}, 1, "503 Service Unavailable: {\"status\":503,\"code\":\"shutting_down\""},
		{"ErrRedirectNotFollowed", nil, []string{"--server", redirect.URL}, 1, "302 Found"},
		{"ErrConnectionRefused", nil, []string{"--server", "http://" + closedAddr(t)}, 1, "connection refused"},
		{"ErrTimeout", nil, []string{"--server", hang.URL, "--timeout", "200ms"}, 1, "no answer within 200ms"},
		{"LimitdURLFromEnv", []string{"LIMITD_URL=" + ok.URL}, nil, 0, ""},
		{"ServerFlagWinsOverEnv", []string{"LIMITD_URL=" + down.URL}, []string{"--server", ok.URL}, 0, ""},
		{"LimitdURLWinsOverAddr", []string{"LIMITD_URL=" + ok.URL, "LIMITD_ADDR=" + closedAddr(t)}, nil, 0, ""},
		{"ServerOwnAddrAllInterfaces", []string{"LIMITD_ADDR=0.0.0.0:" + okPort}, nil, 0, ""},
		{"ServerOwnAddrEmptyHost", []string{"LIMITD_ADDR=:" + okPort}, nil, 0, ""},
		{"ServerOwnAddrLoopback", []string{"LIMITD_ADDR=" + okAddr}, nil, 0, ""},
		{"ErrBadAddr", []string{"LIMITD_ADDR=7070"}, nil, 1, "LIMITD_ADDR"},
		{"ErrExtraArgument", nil, []string{"--server", ok.URL, "now"}, 2, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := runLimitd(t, bin, tc.env, append([]string{"health"}, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.message) {
				t.Errorf("stderr %q does not say %q", r.stderr, tc.message)
			}
			if strings.Contains(tc.name, "Quiet") && r.stdout != "" {
				t.Errorf("-q printed %q", r.stdout)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("took %v", took)
			}
		})
	}

	t.Run("ServerOwnTLSCertificate", func(t *testing.T) {
		tlsSrv := httptest.NewUnstartedServer(ok.Config.Handler)
		// The mismatch case below fails its handshake on purpose.
		tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
		tlsSrv.StartTLS()
		defer tlsSrv.Close()
		dir := t.TempDir()
		own := filepath.Join(dir, "own.crt")
		writePEM(t, own, tlsSrv.Certificate().Raw)
		other := filepath.Join(dir, "other.crt")
		writePEM(t, other, selfSigned(t))
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(tlsSrv.URL, "https://"))

		r := runLimitd(t, bin, []string{"LIMITD_ADDR=0.0.0.0:" + port, "LIMITD_TLS_CERT=" + own}, "health")
		if r.code != 0 {
			t.Errorf("with the server's own certificate: exit %d: %s", r.code, r.stderr)
		}
		r = runLimitd(t, bin, []string{"LIMITD_ADDR=0.0.0.0:" + port, "LIMITD_TLS_CERT=" + other}, "health")
		if r.code != 1 || !strings.Contains(r.stderr, "did not present the certificate") {
			t.Errorf("with another certificate: exit %d: %s; want 1 and a certificate mismatch", r.code, r.stderr)
		}
	})
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func writePEM(t *testing.T, p string, der []byte) {
	t.Helper()
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func selfSigned(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "someone else"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// ---- Dockerfile parsing ------------------------------------------------------

type dockerInstruction struct {
	cmd, args string
}

type dockerStage struct {
	from         string
	instructions []dockerInstruction
}

type dockerfile struct{ stages []dockerStage }

func (s dockerStage) all(cmd string) []string {
	var out []string
	for _, in := range s.instructions {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

func (s dockerStage) last(cmd string) string {
	all := s.all(cmd)
	if len(all) == 0 {
		return ""
	}
	return all[len(all)-1]
}

// env is the stage's ENV, in both the KEY=value ... and the KEY value forms.
func (s dockerStage) env() map[string]string {
	env := map[string]string{}
	for _, e := range s.all("ENV") {
		f := strings.Fields(e)
		if len(f) > 0 && !strings.Contains(f[0], "=") {
			env[f[0]] = strings.TrimSpace(strings.TrimPrefix(e, f[0]))
			continue
		}
		for _, kv := range f {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = strings.Trim(v, `"`)
		}
	}
	return env
}

// healthcheck returns the HEALTHCHECK command and its --options.
func (s dockerStage) healthcheck(t *testing.T) ([]string, map[string]string) {
	t.Helper()
	hc := s.last("HEALTHCHECK")
	opts := map[string]string{}
	rest := hc
	for strings.HasPrefix(rest, "--") {
		opt, after, _ := strings.Cut(rest, " ")
		k, v, _ := strings.Cut(strings.TrimPrefix(opt, "--"), "=")
		opts[k] = v
		rest = strings.TrimSpace(after)
	}
	after, ok := strings.CutPrefix(rest, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %q: want HEALTHCHECK [--options] CMD [...]", hc)
	}
	cmd := dockerList(after)
	if !strings.HasPrefix(strings.TrimSpace(after), "[") {
		t.Errorf("HEALTHCHECK CMD %q is the shell form: the image has no shell", after)
	}
	return cmd, opts
}

func copiesTo(s dockerStage, dest string) bool {
	for _, c := range s.all("COPY") {
		f := strings.Fields(c)
		if len(f) > 0 && f[len(f)-1] == dest {
			return true
		}
	}
	return false
}

// dockerList reads a JSON array (exec form) or whitespace-separated words.
func dockerList(s string) []string {
	var list []string
	if json.Unmarshal([]byte(s), &list) == nil {
		return list
	}
	return strings.Fields(s)
}

func parseDockerfile(t *testing.T, p string) dockerfile {
	t.Helper()
	var df dockerfile
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := dockerInstruction{strings.ToUpper(cmd), strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			from := ""
			for _, w := range f {
				if !strings.HasPrefix(w, "--") {
					from = w
					break
				}
			}
			df.stages = append(df.stages, dockerStage{from: from})
			return
		}
		if len(df.stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("%s: %s before the first FROM", p, in.cmd)
			}
			return
		}
		st := &df.stages[len(df.stages)-1]
		st.instructions = append(st.instructions, in)
	}
	for _, raw := range strings.Split(string(readFile(t, p)), "\n") {
		line := strings.TrimSpace(raw)
		if strings.HasPrefix(line, "#") {
			continue // a comment, also inside a continued instruction
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(l + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	if len(df.stages) == 0 {
		t.Fatalf("%s has no FROM", p)
	}
	return df
}

func ignorePatterns(t *testing.T, p string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(string(readFile(t, p)), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "!") {
			out = append(out, line)
		}
	}
	return out
}

// ---- small helpers ---------------------------------------------------------

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// readYAML returns the non-empty documents of a YAML file.
func readYAML(t *testing.T, p string) []*yaml.Node {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, p)))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", p, len(docs)+1, err)
		}
		var v any
		if err := n.Decode(&v); err != nil {
			t.Fatalf("%s: document %d: %v", p, len(docs)+1, err)
		}
		if v != nil && !isEmptyMap(v) {
			docs = append(docs, &n)
		}
	}
}

func isEmptyMap(v any) bool {
	m, ok := v.(map[string]any)
	return ok && len(m) == 0
}

// decodeYAML decodes a single-document YAML file into out.
func decodeYAML(t *testing.T, p string, out any) {
	t.Helper()
	docs := readYAML(t, p)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want 1", p, len(docs))
	}
	if err := docs[0].Decode(out); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return port
}

// mountHolding returns the mount among mounts that holds dir (dir itself or
// a parent), or "".
func mountHolding(mounts []string, dir string) string {
	dir = path.Clean(dir)
	for _, m := range mounts {
		m = path.Clean(m)
		if dir == m || strings.HasPrefix(dir, m+"/") {
			return m
		}
	}
	return ""
}

func durationOr(t *testing.T, s string, def time.Duration) time.Duration {
	t.Helper()
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("duration %q: %v", s, err)
	}
	return d
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
