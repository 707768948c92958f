// Package schema checks schema/policy.schema.json, the JSON Schema editors use
// to check a policy file as it is typed, against the parser's own fixtures: every
// policy internal/config accepts, the schema accepts; every policy it rejects,
// the schema rejects too, but for the rules listed in notExpressible.
package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	yaml "go.yaml.in/yaml/v3"

	"github.com/mcp-ratelimit/extproc/internal/config"
)

// root is the repository, two levels up from this package.
const root = "../.."

const schemaFile = "schema/policy.schema.json"

// notExpressible lists the invalid fixtures the schema accepts (or never sees),
// each with why no JSON Schema can reject it. The parser still does.
var notExpressible = map[string]string{
	// Rules across fields or across list items.
	"duplicate-method":           "names unique within a list: uniqueItems compares whole items, not one field",
	"duplicate-tool":             "names unique within a list: uniqueItems compares whole items, not one field",
	"identity-duplicate":         "header names compare case-insensitively; uniqueItems compares exact strings",
	"method-cost-exceeds-bucket": "cost is compared with the maxTokens of other buckets: a value compared with a value",
	"tool-cost-exceeds-buckets":  "cost is compared with the maxTokens of other buckets: a value compared with a value",
	"rate-too-high":              "maxTokens is compared with refillPeriod: arithmetic across two fields",
	"bucket-list-cost":           "cost is compared with the maxTokens of other buckets: a value compared with a value",
	"bucket-list-same-period":    "two buckets of a list with the same refillPeriod: one field compared across list items, in any mix of units",
	"bucket-list-never-binds":    "one bucket of a list holds no more and refills no slower than another: arithmetic across list items",
	"plan-cost":                  "cost is compared with the maxTokens of a plan's buckets: a value compared with a value",
	"plan-unknown-tool":          "a plan names a tool rateLimiting.tools does not: a value looked up in another list",
	"plan-default":               "with plans, a perUser or perTenant bucket anywhere in rateLimiting is never charged: a rule across two blocks at any depth",
	"tenant-missing":             "perTenant needs tenant, which may come from the top-level defaults of the servers form: a rule across levels",
	"tenant-default-unused":      "the top-level tenant needs a perTenant bucket in a server that takes it: a rule across servers",
	"tenant-unused":              "tenant needs a perTenant bucket somewhere, in rateLimiting or a plan: a rule across two blocks at any depth",
	// Rules across servers.
	"servers-both-unnamed":      "duplicate server names (here both defaulted): names unique across list items",
	"servers-duplicate-name":    "duplicate server names: names unique across list items",
	"servers-catch-all-first":   "an earlier server's match covers a later one's: comparing list items",
	"servers-root-prefix-first": "an earlier server's match covers a later one's: comparing list items",
	"servers-same-match":        "two servers with the same match: comparing list items",
	"servers-same-match-folded": "two servers with the same match once case and trailing dots are folded: comparing list items",
	"servers-shadowed":          "an earlier server's match covers a later one's: comparing list items",
	// Durations: a pattern checks the spelling, not the value it spells.
	"refill-period-too-long":        "745h is above 744h: a range on the parsed duration, in any mix of units",
	"refill-period-sub-microsecond": "1.0000005s is not a whole number of microseconds: arithmetic on the parsed duration",
	"redis-timeout":                 "30s is above 10s: a range on the parsed duration, in any mix of units",
	// YAML itself: the schema sees JSON, after the YAML has been read.
	"max-tokens-octal": "YAML reads 010 as the integer 8; how it was written is gone by the time it is JSON",
	"merge-key":        "the YAML reader applies << before the schema sees the map, which is then a valid bucket",
	"duplicate-key":    "the YAML reader refuses the file (duplicate key) before there is anything to validate",
	"plan-names":       "the YAML reader refuses the file (a plan listed twice) before there is anything to validate",
	"plan-name-types":  "YAML reads the plan names true and 1.0 as a boolean and a number; a schema sees JSON, whose keys are always strings",
	"yaml-syntax":      "the YAML reader refuses the file (syntax error) before there is anything to validate",
	"two-documents":    "a schema describes one document; the second is never validated against the first",
}

func compile(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open(filepath.Join(root, schemaFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", schemaFile, err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(schemaFile, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(schemaFile)
	if err != nil {
		t.Fatalf("compile %s: %v", schemaFile, err)
	}
	return sch
}

// fromYAML reads the first YAML document of a file as the JSON value an editor
// validates: decoded into any, written as JSON, read back. An empty file is null.
func fromYAML(data []byte) (any, error) {
	var v any
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&v); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(j))
}

func glob(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, pattern))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no files match %s", pattern)
	}
	return files
}

func TestSchemaAcceptsValidFixturesAndExamples(t *testing.T) {
	sch := compile(t)
	files := append(glob(t, "internal/config/testdata/valid/*.yaml"), glob(t, "examples/*.yaml")...)
	for _, file := range files {
		rel, _ := filepath.Rel(root, file)
		t.Run(rel, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			v, err := fromYAML(data)
			if err != nil {
				t.Fatalf("read %s: %v", rel, err)
			}
			if err := sch.Validate(v); err != nil {
				t.Errorf("schema rejects %s, which the parser accepts:\n%v", rel, err)
			}
		})
	}
}

func TestSchemaRejectsInvalidFixtures(t *testing.T) {
	sch := compile(t)
	seen := map[string]bool{}
	for _, file := range glob(t, "internal/config/testdata/invalid/*.yaml") {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			reason, excepted := notExpressible[name]
			v, err := fromYAML(data)
			if err != nil {
				if !excepted {
					t.Errorf("%s is not readable YAML (%v); list it in notExpressible with the reason", name, err)
				}
				return
			}
			err = sch.Validate(v)
			switch {
			case excepted && err != nil:
				t.Errorf("schema rejects %s, listed in notExpressible (%s); remove it from the list", name, reason)
			case !excepted && err == nil:
				t.Errorf("schema accepts %s, which the parser rejects; tighten the schema, or list it in notExpressible with the reason", name)
			}
		})
	}
	for name := range notExpressible {
		if !seen[name] {
			t.Errorf("notExpressible[%q] has no internal/config/testdata/invalid/%s.yaml", name, name)
		}
	}
}

func TestExamplesNameTheSchema(t *testing.T) {
	const want = "# yaml-language-server: $schema=../" + schemaFile
	for _, file := range glob(t, "examples/*.yaml") {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if first, _, _ := strings.Cut(string(data), "\n"); first != want {
			t.Errorf("%s: first line %q, want %q", file, first, want)
		}
	}
}

// Editors show a property's description as its documentation, so every
// property carries one.
func TestEveryPropertyHasDescription(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root, schemaFile))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(v any, path string)
	walk = func(v any, path string) {
		switch v := v.(type) {
		case map[string]any:
			if props, ok := v["properties"].(map[string]any); ok {
				for name, p := range props {
					// false forbids a property in one branch; the description is on the other.
					if p, ok := p.(map[string]any); ok {
						if d, _ := p["description"].(string); d == "" {
							t.Errorf("%s/properties/%s has no description", path, name)
						}
					}
				}
			}
			for k, c := range v {
				switch k {
				case "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "contains":
					// Conditions on properties declared (and described) beside them.
					continue
				}
				walk(c, path+"/"+k)
			}
		case []any:
			for _, c := range v {
				walk(c, path+"/[]")
			}
		}
	}
	walk(doc, "#")
}

// The patterns are hand-written readings of the parser's checks; these edge
// spellings, all accepted by the parser, keep them from drifting stricter.
func TestSchemaAcceptsWhatTheParserAcceptsAtTheEdges(t *testing.T) {
	sch := compile(t)
	const bucket = "rateLimiting: {shared: {maxTokens: 1, refillPeriod: 1m}}\n"
	for _, policy := range []string{
		"rateLimiting: {shared: {maxTokens: 1, refillPeriod: 1h30m}}",
		"rateLimiting: {shared: {maxTokens: 1, refillPeriod: 1.5s}}",
		"rateLimiting: {shared: {maxTokens: 1, refillPeriod: .5s}}",
		"rateLimiting: {shared: {maxTokens: 1, refillPeriod: 0h1000us}}",
		"rateLimiting: {shared: {maxTokens: 1, refillPeriod: 1000µs}}",
		"rateLimiting: {perUser: {maxTokens: 1, refillPeriod: 1m}, tools: [{name: a/b.c}], methods: []}",
		bucket + "redis: {url: redis://localhost}",
		bucket + "redis: {url: 'redis://user:pw@redis:6379/15?dial_timeout=1s'}",
		bucket + "redis: {url: 'rediss://[::1]:6380/'}",
		bucket + "redis: {url: unix:///run/redis.sock}",
		bucket + "redis: {url: rediss://r:6380, tls: {certFile: c, keyFile: k}}",
		bucket + "redis: {cluster: {addrs: ['[::1]:7000', 'r-0.svc:07000']}}",
		bucket + "response: {httpStatus: 599, errorCode: 2147483647, message: ' a '}",
		bucket + "response: {errorCodeFor2026: -32023}",
		bucket + "identity: [{sourceAddress: {}}, {jwtClaim: realm_access.roles}, {header: X-Forwarded-User}]",
		"servers: [{server: a, match: {authority: '[::1]:8443', pathPrefix: /a/.b/...c/}, " + strings.TrimSuffix(bucket, "\n") + "}, {match: {pathPrefix: /}, " + strings.TrimSuffix(bucket, "\n") + "}]",
	} {
		if _, err := config.Parse([]byte(policy)); err != nil {
			t.Errorf("config.Parse(%q): %v; want this case accepted", policy, err)
			continue
		}
		v, err := fromYAML([]byte(policy))
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(v); err != nil {
			t.Errorf("schema rejects %q, which the parser accepts:\n%v", policy, err)
		}
	}
}
