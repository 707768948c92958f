package integration

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/mcp-ratelimit/extproc/internal/limiter"
	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// The files of deploy/monitoring.
const (
	dashboardFile      = "grafana-dashboard.json"
	alertsFile         = "alerts.yaml"
	prometheusRuleFile = "prometheusrule.yaml"
)

// ruleFile is a Prometheus rules file, the fields the shipped rules use.
type ruleFile struct {
	Groups []ruleGroup `yaml:"groups"`
}

type ruleGroup struct {
	Name  string      `yaml:"name"`
	Rules []alertRule `yaml:"rules"`
}

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// prometheusRule is a monitoring.coreos.com/v1 PrometheusRule.
type prometheusRule struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec ruleFile `yaml:"spec"`
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int            `json:"id"`
		Title      string         `json:"title"`
		Datasource *datasourceRef `json:"datasource"`
		Targets    []struct {
			Expr       string         `json:"expr"`
			Datasource *datasourceRef `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// readMonitoring reads deploy/monitoring/name.
func readMonitoring(t *testing.T, name string) []byte {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "monitoring", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeYAML decodes b into v, rejecting fields v does not have.
func decodeYAML(t *testing.T, name string, b []byte, v any) {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func loadAlerts(t *testing.T) ruleFile {
	t.Helper()
	var f ruleFile
	decodeYAML(t, alertsFile, readMonitoring(t, alertsFile), &f)
	return f
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(readMonitoring(t, dashboardFile), &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// labelRefRe finds the `{{ $labels.NAME }}` an annotation prints.
var labelRefRe = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)

func TestAlertRulesAreWellFormedAndTheSameInBothFiles(t *testing.T) {
	rules := loadAlerts(t)
	if len(rules.Groups) == 0 {
		t.Fatalf("%s: no groups", alertsFile)
	}
	seen := map[string]bool{}
	for _, g := range rules.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: want a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" || seen[r.Alert] {
				t.Errorf("rule %q: want a name used once", r.Alert)
			}
			seen[r.Alert] = true
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: no expr", r.Alert)
			}
			// Prometheus durations also take d, w, y; these rules need none.
			if _, err := time.ParseDuration(r.For); r.For != "" && err != nil {
				t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: want a summary and a description annotation", r.Alert)
			}
			// An annotation can print only the labels the expression keeps.
			kept := groupingLabels(r.Expr)
			for _, a := range r.Annotations {
				for _, m := range labelRefRe.FindAllStringSubmatch(a, -1) {
					if !slices.Contains(kept, m[1]) {
						t.Errorf("%s: an annotation prints $labels.%s, which the expression does not keep (by %v)", r.Alert, m[1], kept)
					}
				}
			}
		}
	}
	for _, want := range []string{"McpRateLimitFailingOpen", "McpRateLimitStoreDown", "McpRateLimitConfigReloadFailed", "McpRateLimitLimitedSurge", "McpRateLimitUnreadableSurge"} {
		if !seen[want] {
			t.Errorf("%s: no rule %s", alertsFile, want)
		}
	}

	var pr prometheusRule
	decodeYAML(t, prometheusRuleFile, readMonitoring(t, prometheusRuleFile), &pr)
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" || pr.Metadata.Name == "" {
		t.Errorf("%s: got apiVersion %q kind %q name %q, want a named monitoring.coreos.com/v1 PrometheusRule", prometheusRuleFile, pr.APIVersion, pr.Kind, pr.Metadata.Name)
	}
	if diff := cmp.Diff(rules, pr.Spec); diff != "" {
		t.Errorf("%s spec and %s differ (-%s +%s):\n%s", prometheusRuleFile, alertsFile, alertsFile, prometheusRuleFile, diff)
	}

	// promtool is not among the tools the tests install; use it where it is.
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not on PATH: rules not checked by Prometheus itself")
		return
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", filepath.Join(root, "deploy", "monitoring", alertsFile)).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
}

func TestGrafanaDashboardShape(t *testing.T) {
	d := loadDashboard(t)
	if d.SchemaVersion != 39 {
		t.Errorf("schemaVersion: got %d, want 39", d.SchemaVersion)
	}
	var hasDatasource bool
	for _, v := range d.Templating.List {
		if v.Name == "datasource" {
			hasDatasource = v.Type == "datasource" && string(v.Query) == `"prometheus"`
		}
		if v.Datasource != nil && v.Datasource.UID != "${datasource}" {
			t.Errorf("variable %s: datasource %q, want ${datasource}", v.Name, v.Datasource.UID)
		}
	}
	if !hasDatasource {
		t.Errorf("templating: want a variable datasource of type datasource, query prometheus")
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: want datasource ${datasource} and targets", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: want every target to have an expr and datasource ${datasource}", p.Title)
			}
		}
	}
}

// The PromQL of the dashboard and the rules is read with regexps, not a parser:
// enough for the expressions written here (metric names, `{label op "value"}`
// matchers, `by (...)`/`without (...)` lists, label_values), not for PromQL at
// large: an `on (...)` or a label named inside a string function would be missed.
var (
	// A series selector: the metric name and what is between its braces.
	selectorRe = regexp.MustCompile(`(mcp_ratelimit_[a-z_]+)(?:\s*\{([^}]*)\})?`)
	matcherRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	groupingRe = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	// Grafana's label_values(metric, label) of a query variable.
	labelValuesRe = regexp.MustCompile(`label_values\(\s*(mcp_ratelimit_[a-z_]+)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
)

// promRef is one metric a query reads, with the labels it matches on and the
// values those matchers name (a regexp matcher's alternatives split on |).
type promRef struct {
	metric string
	labels map[string][]string
}

// queryRefs lists the metrics q reads. Labels of by/without and of label_values
// are put on every metric of q: each must carry them for the query to mean
// anything.
func queryRefs(q string) []promRef {
	var refs []promRef
	for _, m := range selectorRe.FindAllStringSubmatch(q, -1) {
		r := promRef{metric: m[1], labels: map[string][]string{}}
		for _, mm := range matcherRe.FindAllStringSubmatch(m[2], -1) {
			vals := []string{mm[3]}
			if mm[2] == "=~" || mm[2] == "!~" {
				vals = strings.Split(mm[3], "|")
			}
			r.labels[mm[1]] = append(r.labels[mm[1]], vals...)
		}
		refs = append(refs, r)
	}
	extra := groupingLabels(q)
	for _, m := range labelValuesRe.FindAllStringSubmatch(q, -1) {
		extra = append(extra, m[2])
	}
	for _, r := range refs {
		for _, l := range extra {
			if _, ok := r.labels[l]; !ok {
				r.labels[l] = nil
			}
		}
	}
	return refs
}

// groupingLabels lists the labels of q's by (...) and without (...) clauses.
func groupingLabels(q string) []string {
	var out []string
	for _, m := range groupingRe.FindAllStringSubmatch(q, -1) {
		for l := range strings.SplitSeq(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
	}
	return out
}

// monitoringQueries returns every PromQL expression of the dashboard (panels and
// variables) and of the alert rules, each with where it is from.
func monitoringQueries(t *testing.T) map[string]string {
	t.Helper()
	qs := map[string]string{}
	d := loadDashboard(t)
	for _, p := range d.Panels {
		for i, tg := range p.Targets {
			qs[dashboardFile+": panel "+p.Title+" #"+string(rune('A'+i))] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			qs[dashboardFile+": variable "+v.Name] = v.Definition
		}
	}
	for _, g := range loadAlerts(t).Groups {
		for _, r := range g.Rules {
			qs[alertsFile+": "+r.Alert] = r.Expr
		}
	}
	return qs
}

// seriesLabelRe finds the label names of one scraped series; the values the
// limiter exports (servers, methods, tool:NAME, ...) hold no `="`.
var seriesLabelRe = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)

// labelNames maps each metric of s (histograms: name_bucket, name_count, ...) to
// the label names its series carry.
func (s scraped) labelNames() map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for series := range s {
		name, labels, _ := strings.Cut(series, "{")
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for _, m := range seriesLabelRe.FindAllStringSubmatch(labels, -1) {
			out[name][m[1]] = true
		}
	}
	return out
}

func TestMonitoringQueriesMatchTheScrape(t *testing.T) {
	env := start(t, echoOncePolicy, harness.Options{})
	ex := env.Extprocs[0]
	raw := newRawClient(t, env.URL)
	checkPassed(t, "echo 1", raw.call("1", demo.ToolEcho))
	checkRejected(t, raw.call("2", demo.ToolEcho), "2", "tool:echo", "shared")
	if r := raw.post("not json", nil); r.Status != 400 {
		t.Errorf("a body that is not JSON: got %d %q, want 400 from the limiter", r.Status, r.Body)
	}
	if err := os.WriteFile(env.PolicyPath, []byte(strings.Replace(echoOncePolicy, "maxTokens: 1", "maxTokens: 5", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	reloadAndWait(t, ex, `mcp_ratelimit_config_reloads_total{result="success"}`, 1)
	have := scrape(t, ex).labelNames()

	// Labels whose values are a closed set: a matcher naming any other value
	// would never match.
	decisions := []string{}
	for _, o := range []limiter.Outcome{
		limiter.OutcomeAllowed, limiter.OutcomeLimited, limiter.OutcomeDryRunLimited,
		limiter.OutcomeFailedOpen, limiter.OutcomeFailedClosed, limiter.OutcomeUnlimited,
		limiter.OutcomeUnreadable, limiter.OutcomeHeaderMismatch, limiter.OutcomeOverloaded,
		limiter.OutcomeAmbiguousRoute,
	} {
		decisions = append(decisions, string(o))
	}
	closed := map[string][]string{
		"decision": decisions,
		"result":   {"success", "failure"},
		"kind":     {"timeout", "error"},
	}

	used := map[string]bool{}
	qs := monitoringQueries(t)
	for _, where := range slices.Sorted(maps.Keys(qs)) {
		refs := queryRefs(qs[where])
		if len(refs) == 0 {
			t.Errorf("%s: %q reads no mcp_ratelimit_ metric", where, qs[where])
		}
		for _, r := range refs {
			used[r.metric] = true
			labels, ok := have[r.metric]
			if !ok {
				t.Errorf("%s: metric %s is not in the scrape", where, r.metric)
				continue
			}
			for l, vals := range r.labels {
				if !labels[l] {
					t.Errorf("%s: %s has no label %q (it has %v)", where, r.metric, l, slices.Sorted(maps.Keys(labels)))
				}
				for _, v := range vals {
					if set, ok := closed[l]; ok && !strings.Contains(v, "$") && !slices.Contains(set, v) {
						t.Errorf("%s: %s=%q: got a value the limiter never exports, want one of %v", where, l, v, set)
					}
				}
			}
		}
	}
	// Every series the limiter exports is on the dashboard or in a rule.
	for name := range have {
		family := name
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			family = strings.TrimSuffix(family, suffix)
		}
		if !strings.HasPrefix(name, "mcp_ratelimit_") || used[name] || used[family+"_bucket"] || used[family+"_count"] {
			continue
		}
		t.Errorf("%s is exported but neither the dashboard nor the alert rules read it", name)
	}
}
