package metrics_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// repoFile is a file of the repository, from this package's directory.
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join("..", "..", filepath.FromSlash(rel))
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return p
}

// promtool is the path of Prometheus's promtool, or skips the test.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not on PATH (Debian: apt-get install -y --no-install-recommends prometheus); .ci/run installs it")
	}
	return p
}

func runPromtool(t *testing.T, stdin []byte, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// busyScrape is a scrape of a server after one of each kind of event, so
// that every family limitd exports has at least one series.
func busyScrape(t *testing.T) exposition {
	t.Helper()
	h := newHarness(t)
	h.do("PUT", "/v1/limits/jobs", `{"capacity": 1}`, http.StatusCreated)
	id := h.acquire("jobs", `{"holder": "w1"}`)
	h.do("POST", "/v1/limits/jobs/acquire", `{"wait_seconds": 0}`, http.StatusLocked)
	h.do("POST", "/v1/leases/"+id+"/renew", "", http.StatusOK)
	h.do("DELETE", "/v1/leases/"+id, "", http.StatusNoContent)
	h.do("GET", "/healthz", "", http.StatusOK)
	return h.scrape()
}

// TestScrapeHasEverySpecFamily names each family SPEC.md and the issue
// promise, with its type.
func TestScrapeHasEverySpecFamily(t *testing.T) {
	e := busyScrape(t)
	want := map[string]dto.MetricType{
		"limitd_limit_capacity":                dto.MetricType_GAUGE,
		"limitd_limit_slots_in_use":            dto.MetricType_GAUGE,
		"limitd_limit_waiters":                 dto.MetricType_GAUGE,
		"limitd_limit_leases":                  dto.MetricType_GAUGE,
		"limitd_limit_oldest_waiter_seconds":   dto.MetricType_GAUGE,
		"limitd_acquires_total":                dto.MetricType_COUNTER,
		"limitd_releases_total":                dto.MetricType_COUNTER,
		"limitd_lease_expirations_total":       dto.MetricType_COUNTER,
		"limitd_acquire_wait_seconds":          dto.MetricType_HISTOGRAM,
		"limitd_lease_hold_seconds":            dto.MetricType_HISTOGRAM,
		"limitd_http_requests_total":           dto.MetricType_COUNTER,
		"limitd_http_request_duration_seconds": dto.MetricType_HISTOGRAM,
		"limitd_http_acquire_duration_seconds": dto.MetricType_HISTOGRAM,
		"limitd_store_commit_duration_seconds": dto.MetricType_HISTOGRAM,
		"limitd_store_commit_batch_size":       dto.MetricType_HISTOGRAM,
		"limitd_store_commit_errors_total":     dto.MetricType_COUNTER,
		"go_goroutines":                        dto.MetricType_GAUGE,
		"process_cpu_seconds_total":            dto.MetricType_COUNTER,
		"process_resident_memory_bytes":        dto.MetricType_GAUGE,
	}
	for name, typ := range want {
		f := e.fams[name]
		switch {
		case f == nil:
			t.Errorf("family %s is not exported", name)
		case f.GetType() != typ:
			t.Errorf("family %s is a %v, want %v", name, f.GetType(), typ)
		case f.GetHelp() == "":
			t.Errorf("family %s has no HELP", name)
		}
	}
	// Buckets resolve waits and holds from 100 µs to 10 minutes.
	wait := e.histogram("limitd_acquire_wait_seconds", "limit", "jobs")
	// The parsed histogram ends with the +Inf bucket.
	if lo, hi := wait.Bucket[0].GetUpperBound(), wait.Bucket[len(wait.Bucket)-2].GetUpperBound(); lo != 0.0001 || hi != 600 {
		t.Errorf("acquire_wait_seconds buckets span %v to %v, want 0.0001 to 600", lo, hi)
	}
}

func TestExpositionPassesPromtoolCheckMetrics(t *testing.T) {
	promtool(t)
	e := busyScrape(t)
	runPromtool(t, []byte(e.text), "check", "metrics")
}

func TestAlertRulesPassPromtool(t *testing.T) {
	promtool(t)
	runPromtool(t, nil, "check", "rules", repoFile(t, "deploy/prometheus/rules.yml"))
	runPromtool(t, nil, "test", "rules", repoFile(t, "deploy/prometheus/rules_test.yml"))
	runPromtool(t, nil, "check", "config", repoFile(t, "deploy/prometheus/prometheus.yml"))
}

// TestRuleTestsHoldWithLeftOpenRanges runs the rule tests against a copy of
// rules.yml whose every range is a second shorter: at a whole-minute
// evaluation, [599s] leaves out the sample taken 10 minutes before, as
// Prometheus 3's left-open [10m] does, while Debian's promtool (2.x, what the
// tests run with) keeps it in [10m]. compose.yaml runs Prometheus 3, so an
// expected value or firing time that needs that sample would pass here and
// be wrong there.
func TestRuleTestsHoldWithLeftOpenRanges(t *testing.T) {
	promtool(t)
	rules, err := os.ReadFile(repoFile(t, "deploy/prometheus/rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(repoFile(t, "deploy/prometheus/rules_test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	shorter := regexp.MustCompile(`\[([0-9]+)m\]`).ReplaceAllFunc(rules, func(r []byte) []byte {
		n++
		minutes, _ := strconv.Atoi(string(r[1 : len(r)-2]))
		return []byte("[" + strconv.Itoa(minutes*60-1) + "s]")
	})
	if n == 0 {
		t.Fatal("rules.yml has no range in minutes: this test checks nothing; update it")
	}
	dir := t.TempDir()
	// rules_test.yml names rules.yml beside it.
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), shorter, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules_test.yml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, nil, "test", "rules", filepath.Join(dir, "rules_test.yml"))
}

// unknownNames lists the names of limitd's, Go's and the process's metrics
// in text (PromQL, YAML) that e does not export. A histogram's _bucket, _sum
// and _count series count as its family's.
func unknownNames(e exposition, text string) []string {
	metricName := regexp.MustCompile(`\b(?:limitd|go|process)_[a-zA-Z0-9_]*[a-zA-Z0-9]`)
	seen := map[string]bool{}
	for _, name := range metricName.FindAllString(text, -1) {
		if seen[name] {
			continue
		}
		seen[name] = true
		if e.fams[name] != nil {
			delete(seen, name)
			continue
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if f := e.fams[strings.TrimSuffix(name, suffix)]; strings.HasSuffix(name, suffix) && f != nil && f.GetType() == dto.MetricType_HISTOGRAM {
				delete(seen, name)
			}
		}
	}
	var out []string
	for name := range seen {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// TestAlertRulesNameExportedMetrics checks the rules, and the series their
// tests feed them, against a live scrape: a renamed metric would otherwise
// leave a rule that silently never fires.
func TestAlertRulesNameExportedMetrics(t *testing.T) {
	e := busyScrape(t)
	for _, rel := range []string{"deploy/prometheus/rules.yml", "deploy/prometheus/rules_test.yml"} {
		b, err := os.ReadFile(repoFile(t, rel))
		if err != nil {
			t.Fatal(err)
		}
		if bad := unknownNames(e, string(b)); len(bad) > 0 {
			t.Errorf("%s names metrics limitd does not export: %v", rel, bad)
		}
	}
}

// dashboard is the part of a Grafana dashboard that holds queries.
type dashboard struct {
	Title  string `json:"title"`
	Panels []struct {
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

func loadDashboard(t *testing.T) (dashboard, []string) {
	t.Helper()
	b, err := os.ReadFile(repoFile(t, "deploy/grafana/dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard.json does not parse: %v", err)
	}
	var exprs []string
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q has an empty query", p.Title)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	return d, exprs
}

// TestDashboardNamesOnlyExportedMetrics checks that the dashboard parses,
// that every metric its queries and variables name is one limitd exports,
// and that it shows what an operator needs to see.
func TestDashboardNamesOnlyExportedMetrics(t *testing.T) {
	e := busyScrape(t)
	d, exprs := loadDashboard(t)
	all := strings.Join(exprs, "\n")
	for _, v := range d.Templating.List {
		all += "\n" + v.Definition
	}
	if bad := unknownNames(e, all); len(bad) > 0 {
		t.Errorf("dashboard.json names metrics limitd does not export: %v", bad)
	}
	for _, must := range []string{
		"limitd_limit_slots_in_use", "limitd_limit_capacity", "limitd_limit_waiters",
		"limitd_acquire_wait_seconds_bucket", `result="granted"`, "limitd_lease_expirations_total",
		"limitd_releases_total", "limitd_lease_hold_seconds_bucket",
	} {
		if !strings.Contains(all, must) {
			t.Errorf("no dashboard query uses %s", must)
		}
	}
}

// TestDashboardQueriesParse has promtool parse every dashboard query, with
// Grafana's variables replaced by values, as recording rules.
func TestDashboardQueriesParse(t *testing.T) {
	promtool(t)
	_, exprs := loadDashboard(t)
	vars := strings.NewReplacer("$__rate_interval", "5m", "$job", "limitd", "$instance", ".*", "$limit", ".*")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for _, expr := range exprs {
		q, err := json.Marshal(vars.Replace(expr)) // a JSON string is a YAML string
		if err != nil {
			t.Fatal(err)
		}
		rules.WriteString("      - record: dashboard:query\n        expr: " + string(q) + "\n")
	}
	path := filepath.Join(t.TempDir(), "dashboard_rules.yml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, nil, "check", "rules", path)
}
