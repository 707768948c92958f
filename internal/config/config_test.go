package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// invalidFixtures maps each testdata/invalid/<name>.yaml to the exact problems
// Parse must report, in order.
var invalidFixtures = map[string][]string{
	"plan-shared": {
		`plans.limits.pro.shared (line 10): a plan holds per-user and per-tenant buckets only: a shared bucket counts every user together, whatever their plan; keep it in rateLimiting`,
		`plans.limits.pro.tools[0].cost (line 13): a call's cost is the same on every plan; set it in rateLimiting`,
	},
	"plan-unknown-tool": {
		`plans.limits.pro.tools[0].name (line 14): tool "serach" is not in rateLimiting.tools; list it there (a name alone will do), where its cost is set for every plan`,
		`plans.limits.pro.methods[0].name (line 17): method "prompts/get" is not in rateLimiting.methods; list it there (a name alone will do), where its cost is set for every plan`,
	},
	"plan-default": {
		`rateLimiting.perUser (line 2): never charged: with plans every user is on a plan, and a plan's per-user and per-tenant buckets replace rateLimiting's; move this bucket into plans.limits.free`,
		`rateLimiting.tools[0].perTenant (line 5): never charged: with plans every user is on a plan, and a plan's per-user and per-tenant buckets replace rateLimiting's; move this bucket into plans.limits.free`,
	},
	"plan-no-default": {
		`plans.default (line 5): missing: the plan of users whose plan value is missing or not listed; every user is on a plan`,
	},
	"plan-name-types": {
		`plans.limits.true (line 8): plan names must be strings, got true; quote it`,
		`plans.limits.1.0 (line 9): plan names must be strings, got 1.0; quote it`,
	},
	"plan-names": {
		`plans.from (line 4): must list at least one source: the sources of a user's plan name, e.g. [{jwtClaim: plan}]`,
		`plans.default (line 5): names no plan in plans.limits: "gold"`,
		`plans.limits.pro:v2 (line 7): a plan name must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (it is a metric label and part of Redis keys); got "pro:v2"`,
		`plans.limits.free (line 9): duplicate plan (first at line 8)`,
	},
	"plan-missing": {
		`plans.from (line 4): missing: the sources of a user's plan name, e.g. from: [{jwtClaim: plan}]`,
		`plans.limits (line 4): missing: each plan's per-user and per-tenant buckets, by plan name`,
	},
	"plan-cost": {
		`rateLimiting.tools[0].cost (line 5): cost 5 exceeds plans.limits.free.perUser.maxTokens 3: the tool could never be called`,
		`rateLimiting.tools[0].cost (line 5): cost 5 exceeds plans.limits.pro.tools[0].perUser.maxTokens 4: the tool could never be called`,
	},
	"tenant-missing": {
		`servers[0].rateLimiting.perTenant (line 5): perTenant buckets need tenant: the sources that name a user's tenant (for example tenant: [{jwtClaim: org_id}])`,
		`servers[0].rateLimiting.tools[0].perTenant (line 8): perTenant buckets need tenant: the sources that name a user's tenant (for example tenant: [{jwtClaim: org_id}])`,
		`servers[1].plans.limits.pro.perTenant (line 17): perTenant buckets need tenant: the sources that name a user's tenant (for example tenant: [{jwtClaim: org_id}])`,
	},
	"tenant-default-unused": {`tenant (line 1): no server that takes this default has a perTenant bucket; add one, or remove tenant`},
	"tenant-unused":         {`tenant (line 3): no perTenant bucket uses it; add one (rateLimiting or a plan) or remove tenant`},
	"plans-with-servers":    {`plans (line 1): cannot be used together with servers (line 5); move it into a servers entry`},
	"bucket-list-never-binds": {
		`rateLimiting.perUser[0] (line 3): never binds: rateLimiting.perUser[1] (maxTokens 5 per 1h) holds no more and refills no faster, so it always runs out first; drop this bucket or raise the other`,
	},
	"bucket-list":       {`rateLimiting.shared[0] (line 2): must be a map, got 10`, `rateLimiting.shared[1] (line 2): must be a map, got "1m"`},
	"bucket-list-cost":  {`rateLimiting.methods[0].cost (line 4): cost 20 exceeds rateLimiting.methods[0].shared[1].maxTokens 10: the method could never be called`},
	"bucket-list-empty": {`rateLimiting.perUser (line 2): must be a bucket or a list of 1 to 8 buckets, got an empty list`},
	"bucket-list-item": {
		`rateLimiting.perUser[1].maxTokens (line 4): must be an integer >= 1 and <= 1000000000, got 0`,
		`rateLimiting.perUser[2].refillPeriod (line 5): missing: a bucket needs maxTokens and refillPeriod`,
	},
	"bucket-list-same-period":       {`rateLimiting.tools[0].perUser[2] (line 7): same refillPeriod 1m0s as rateLimiting.tools[0].perUser[0]: the bucket with the smaller maxTokens (10) always binds first, so the other never does; keep one`},
	"bucket-list-too-long":          {`rateLimiting.perUser (line 3): must list at most 8 buckets, got 9`},
	"bucket-null":                   {`rateLimiting.shared (line 2): must be a map, got null`},
	"dry-run-string":                {`dryRun (line 3): must be true or false, got "true"`},
	"dry-run-yes":                   {`dryRun (line 3): must be true or false, got "yes"`},
	"duplicate-key":                 {`rateLimiting.shared (line 3): duplicate key (first at line 2)`},
	"duplicate-method":              {`rateLimiting.methods[1].name (line 5): duplicate method "resources/read" (first at rateLimiting.methods[0])`},
	"duplicate-tool":                {`rateLimiting.tools[2].name (line 8): duplicate tool "search" (first at rateLimiting.tools[0])`},
	"empty":                         {`policy file is empty`},
	"failure-mode":                  {`failureMode (line 3): must be one of open, closed, local; got "fail-open"`},
	"unreadable-body":               {`unreadableBody (line 3): must be one of reject, continue; got "allow"`},
	"compression-coding":            {`requestCompression.codings[0] (line 4): must be one of gzip, deflate; got "br"`},
	"compression-no-codings":        {`requestCompression.codings (line 4): must list gzip, deflate or both (leave requestCompression out to accept no compressed body)`},
	"compression-ratio":             {`requestCompression.maxRatio (line 6): must be an integer from 2 to 10000, got 1`},
	"identity-claim-invalid":        {`identity[0].jwtClaim (line 4): must be a claim name or a dotted path such as "sub" or "org.id", got "org..id"`},
	"identity-duplicate":            {`identity[1] (line 5): duplicate identity source (first at identity[0])`},
	"identity-empty":                {`identity (line 3): must list at least one source; omit identity for the default (jwtClaim: sub)`},
	"identity-header-invalid":       {`identity[0].header (line 4): must be an HTTP header name, got "x user"`},
	"identity-no-key":               {`identity[0] (line 4): must set exactly one of jwtClaim, header, sourceAddress`},
	"identity-pseudo-header":        {`identity[0].header (line 4): pseudo-header ":authority" cannot identify a user; use a request header, or sourceAddress for the client address`},
	"identity-source-address-value": {`identity[0].sourceAddress (line 4): must be {} (it takes no options), got true`},
	"identity-two-keys":             {`identity[0] (line 4): must set exactly one of jwtClaim, header, sourceAddress; got jwtClaim and header (use one list item per source)`},
	"identity-unknown-source":       {`identity[0].jwt (line 4): unknown field; expected one of jwtClaim, header, sourceAddress`},
	"limits-nothing":                {`rateLimiting (line 1): limits nothing: set shared, perUser or perTenant, or a tool or method with one of them`},
	"max-tokens-float":              {`rateLimiting.shared.maxTokens (line 2): must be an integer >= 1 and <= 1000000000, got 1.5`},
	"max-tokens-missing":            {`rateLimiting.shared.maxTokens (line 2): missing: a bucket needs maxTokens and refillPeriod`},
	"max-tokens-negative":           {`rateLimiting.shared.maxTokens (line 2): must be an integer >= 1 and <= 1000000000, got -5`},
	"max-tokens-octal":              {`rateLimiting.shared.maxTokens (line 2): must be an integer >= 1 and <= 1000000000 written in decimal, got 010`},
	"max-tokens-string":             {`rateLimiting.shared.maxTokens (line 2): must be an integer >= 1 and <= 1000000000, got "10"`},
	"max-tokens-too-big":            {`rateLimiting.shared.maxTokens (line 2): must be an integer >= 1 and <= 1000000000, got 1000000001`},
	"max-tokens-zero":               {`rateLimiting.shared.maxTokens (line 2): must be an integer >= 1 and <= 1000000000, got 0`},
	"merge-key":                     {`rateLimiting.shared.<< (line 4): merge keys (<<) are not supported; repeat the fields, or share a whole value with an anchor (&name, *name)`},
	"method-cost-exceeds-bucket":    {`rateLimiting.methods[0].cost (line 4): cost 20 exceeds rateLimiting.methods[0].perUser.maxTokens 10: the method could never be called`},
	"method-tools-call":             {`rateLimiting.methods[0].name (line 3): tools/call is limited by rateLimiting.shared, rateLimiting.perUser, rateLimiting.perTenant and rateLimiting.tools, not methods`},
	"method-without-bucket":         {`rateLimiting.methods[0] (line 4): limits nothing: give the method shared, perUser or perTenant (rateLimiting.shared, rateLimiting.perUser and rateLimiting.perTenant apply to tools/call only)`},
	"missing-rate-limiting":         {`rateLimiting (line 1): missing: the policy must limit something (rateLimiting for one MCP server, or servers for several)`},
	"misspelled-refill-period":      {`rateLimiting.shared.refilPeriod (line 2): unknown field (did you mean "refillPeriod"?)`},
	"only-comment":                  {`policy file is empty`},
	"rate-too-high":                 {`rateLimiting.shared (line 2): rate too high: at most one token per microsecond (maxTokens 2000 over refillPeriod 1ms)`},
	"redis-cluster-addr":            {`redis.cluster.addrs[0] (line 4): must be host:port, got "redis-0"`},
	"redis-exclusive": {
		`redis.cluster (line 5): cannot be used together with redis.url (line 4); choose one`,
		`redis.sentinel (line 6): cannot be used together with redis.url (line 4); choose one`,
	},
	"redis-password-twice": {`redis.password (line 5): the url already holds a password; set it in one place`},
	"redis-sentinel-incomplete": {
		`redis.sentinel.masterName (line 4): missing: sentinel needs masterName and addrs`,
		`redis.sentinel.addrs (line 4): must list at least one host:port`,
	},
	"redis-sentinel-credentials": {
		`redis.sentinel.username (line 4): must be a string, got a list`,
		`redis.sentinel.password (line 4): must be a string, got 123456`,
	},
	"redis-timeout": {`redis.timeout (line 4): must be from 1ms to 10s, got "30s"`},
	"redis-tls": {
		`redis.tls (line 5): needs a rediss:// url (redis:// is plaintext)`,
		`redis.tls (line 5): certFile and keyFile go together: set both or neither`,
	},
	"redis-url-database":            {`redis.url (line 4): invalid database number: "x"`},
	"redis-url-scheme":              {`redis.url (line 4): scheme must be redis://, rediss:// or unix://, got "http"`},
	"redis-url-unparsable":          {`redis.url (line 4): is not a valid URL`},
	"refill-period-days":            {`rateLimiting.shared.refillPeriod (line 2): must be a Go duration such as "30s", "1m" or "24h", got "30d" (Go durations have no day unit; write hours, e.g. "720h" for 30 days)`},
	"refill-period-missing":         {`rateLimiting.shared.refillPeriod (line 2): missing: a bucket needs maxTokens and refillPeriod`},
	"refill-period-negative":        {`rateLimiting.shared.refillPeriod (line 2): must be from 1ms to 744h (31 days), got "-1m"`},
	"refill-period-no-unit":         {`rateLimiting.shared.refillPeriod (line 2): must be a Go duration such as "30s", "1m" or "24h", got 60 (a unit is required)`},
	"refill-period-sub-microsecond": {`rateLimiting.shared.refillPeriod (line 2): must be a whole number of microseconds, got "1.0000005s"`},
	"refill-period-too-long":        {`rateLimiting.shared.refillPeriod (line 2): must be from 1ms to 744h (31 days), got "745h"`},
	"refill-period-zero":            {`rateLimiting.shared.refillPeriod (line 2): must be from 1ms to 744h (31 days), got "0s"`},
	"response-error-code-reserved":  {`response.errorCode (line 4): -32603 is JSON-RPC's "Internal error" code; clients would not read it as a rate limit (the default is -32029)`},
	"response-error-code-too-big":   {`response.errorCode (line 4): must be an integer from -2147483648 to 2147483647, got 4294967296`},
	"response-format":               {`response.format (line 4): must be one of jsonrpcError, toolResult; got "xml"`},
	"response-http-status":          {`response.httpStatus (line 4): must be 200 or from 400 to 599, got 302`},
	"response-message-empty":        {`response.message (line 4): must not be empty`},
	"response-message-too-long":     {`response.message (line 4): must be at most 200 characters, got 201`},
	"root-list":                     {`line 1: must be a map, got a list`},
	"server-name-braces":            {`server (line 1): must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (it names Redis keys and their Cluster hash tag); got "{github}"`},
	"server-name-integer":           {`server (line 1): must be a string, got 2024`},
	"servers-and-single-form": {
		`server (line 1): cannot be used together with servers (line 4); move it into a servers entry`,
		`rateLimiting (line 2): cannot be used together with servers (line 4); move it into a servers entry`,
	},
	"servers-both-unnamed":    {`servers[1].server (line 5): duplicate server name "default" (first at servers[0]); name each server with server:`},
	"servers-catch-all-first": {`servers[1].match (line 6): unreachable: servers[0] catches every request (no match, or only pathPrefix "/"); only the last server may`},
	"servers-duplicate-name":  {`servers[1].server (line 6): duplicate server name "a" (first at servers[0])`},
	"servers-empty":           {`servers (line 1): must list at least one server`},
	"servers-match-invalid": {
		`servers[0].match.authority (line 3): must be a host or host:port such as "mcp.example.com" or "mcp.example.com:8443", not a URL; got "https://mcp.example.com"`,
		`servers[0].match.pathPrefix (line 3): must start with "/", got "github"`,
	},
	"servers-match-port-sign":       {`servers[0].match.authority (line 4): must be a host or host:port such as "mcp.example.com" or "mcp.example.com:8443"; got "mcp.example.com:+8443"`},
	"servers-match-wildcard":        {`servers[0].match.authority (line 3): must be a host or host:port such as "mcp.example.com" or "mcp.example.com:8443" (wildcards are not supported); got "*.example.com"`},
	"servers-missing-rate-limiting": {`servers[0].rateLimiting (line 2): missing: every server needs a rateLimiting block`},
	"servers-name-key":              {`servers[0].name (line 2): unknown field: a server's name goes in "server"`},
	"servers-redis-inside":          {`servers[0].redis (line 5): redis is only allowed at the top level: one store serves every server`},
	"servers-path-prefix-spelling": {
		`servers[0].match.pathPrefix (line 4): must hold only ASCII letters, digits, "-", ".", "_", "~" and "/" (what clients send unescaped), got "/%67ithub"`,
		`servers[1].match.pathPrefix (line 8): must hold only ASCII letters, digits, "-", ".", "_", "~" and "/" (what clients send unescaped), got "/github;v=1/mcp"`,
		`servers[2].match.pathPrefix (line 12): must not hold empty, "." or ".." segments (routers read them several ways), got "/x/../github"`,
		`servers[3].match.pathPrefix (line 16): must not hold empty, "." or ".." segments (routers read them several ways), got "//github"`,
		`servers[4].match.pathPrefix (line 20): must hold only ASCII letters, digits, "-", ".", "_", "~" and "/" (what clients send unescaped), got "/github\\mcp"`,
		`servers[5].match.pathPrefix (line 24): must hold only ASCII letters, digits, "-", ".", "_", "~" and "/" (what clients send unescaped), got "/café"`,
	},
	"servers-root-prefix-first": {`servers[1].match (line 8): unreachable: servers[0] catches every request (no match, or only pathPrefix "/"); only the last server may`},
	"servers-same-match":        {`servers[1].match (line 7): same match as servers[0]; this server would never be used`},
	"servers-same-match-folded": {`servers[1].match (line 8): same match as servers[0]; this server would never be used`},
	"servers-shadowed":          {`servers[1].match (line 7): unreachable: servers[0].match catches every request this one would; put the more specific server first`},
	"tool-cost-exceeds-buckets": {
		`rateLimiting.tools[0].cost (line 6): cost 5 exceeds rateLimiting.perUser.maxTokens 3: the tool could never be called`,
		`rateLimiting.tools[0].cost (line 6): cost 5 exceeds rateLimiting.tools[0].shared.maxTokens 4: the tool could never be called`,
	},
	"tool-cost-zero":        {`rateLimiting.tools[0].cost (line 5): must be an integer >= 1 and <= 1000000000, got 0`},
	"tool-limits-nothing":   {`rateLimiting (line 2): limits nothing: set shared, perUser or perTenant, or a tool or method with one of them`},
	"tool-name-empty":       {`rateLimiting.tools[0].name (line 4): must not be empty`},
	"tool-name-missing":     {`rateLimiting.tools[0].name (line 4): missing: every tool needs a name`},
	"tool-name-replacement": {`rateLimiting.tools[0].name (line 4): must not contain U+FFFD, the replacement character: servers decode invalid text to it in different ways, got "se\ufffdrch"`},
	"tool-name-spaces":      {`rateLimiting.tools[0].name (line 4): must not start or end with spaces, got " search"`},
	"tool-not-a-map":        {`rateLimiting.tools[0] (line 4): must be a map, got "search"`},
	"tools-not-a-list":      {`rateLimiting.tools (line 3): must be a list, got a map`},
	"two-documents":         {`line 3: a policy file holds one YAML document; found a second one`},
	"unknown-top-field":     {`rateLimitng (line 3): unknown field (did you mean "rateLimiting"?)`},
	"wrong-case-field":      {`rateLimiting.shared.maxtokens (line 2): unknown field (did you mean "maxTokens"?)`},
	"yaml-syntax":           {`invalid YAML: line 2: found character that cannot start any token`},
}

func TestParseRejectsInvalidFixtureWithExactProblems(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		seen[name] = true
		t.Run(name, func(t *testing.T) {
			want, ok := invalidFixtures[name]
			if !ok {
				t.Fatalf("fixture %s has no expected problems in invalidFixtures", file)
			}
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			p, err := Parse(data)
			if err == nil {
				t.Fatalf("Parse(%s) = %+v, nil; want problems %q", file, p, want)
			}
			if p != nil {
				t.Errorf("Parse(%s) returned a policy with an error; want nil", file)
			}
			if got := Problems(err); !cmp.Equal(got, want) {
				t.Errorf("Parse(%s) problems:\n%s", file, cmp.Diff(want, got))
			}
			// The joined error prints the same problems, one per line.
			if got, want := err.Error(), strings.Join(want, "\n"); got != want {
				t.Errorf("err.Error() = %q, want %q", got, want)
			}
		})
	}
	for name := range invalidFixtures {
		if !seen[name] {
			t.Errorf("invalidFixtures[%q] has no testdata/invalid/%s.yaml", name, name)
		}
	}
}

func TestParseReportsEveryProblemInDocumentOrder(t *testing.T) {
	data, err := os.ReadFile("testdata/many-problems.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Parse(data)
	want := []string{
		`server (line 2): must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (it names Redis keys and their Cluster hash tag); got "my server"`,
		`rateLimiting.shared.maxTokens (line 4): must be an integer >= 1 and <= 1000000000, got 0`,
		`rateLimiting.shared.refilPeriod (line 4): unknown field (did you mean "refillPeriod"?)`,
		`rateLimiting.tools[1].cost (line 9): cost 50 exceeds rateLimiting.tools[1].perUser.maxTokens 5: the tool could never be called`,
		`rateLimiting.tools[1].perUser.refillPeriod (line 10): must be a Go duration such as "30s", "1m" or "24h", got "1 minute"`,
		`rateLimiting.tools[2].name (line 11): duplicate tool "search" (first at rateLimiting.tools[0])`,
		`identity[0] (line 14): must set exactly one of jwtClaim, header, sourceAddress; got header and jwtClaim (use one list item per source)`,
		`response.format (line 17): must be one of jsonrpcError, toolResult; got "xml"`,
		`response.httpStatus (line 18): must be 200 or from 400 to 599, got 302`,
		`dryRun (line 20): must be true or false, got "yes"`,
		`redis.url (line 22): scheme must be redis://, rediss:// or unix://, got "ftp"`,
		`redis.timeout (line 23): must be from 1ms to 10s, got "1h"`,
	}
	if got := Problems(err); !cmp.Equal(got, want) {
		t.Errorf("Problems(Parse(many-problems.yaml)):\n%s", cmp.Diff(want, got))
	}
}

func bucket(max int64, period time.Duration) []Bucket {
	return []Bucket{{MaxTokens: max, RefillPeriod: period}}
}

func intPtr(v int) *int { return &v }

var defaultResponse = Response{ErrorCode: -32029, HTTPStatus: 429, Format: FormatJSONRPCError, Message: "Rate limit exceeded", HeadersOnAllowed: true}

func TestParseAppliesDefaultsAndReadsEveryField(t *testing.T) {
	tests := []struct {
		file string
		want *Policy
	}{{
		file: "testdata/valid/minimal.yaml",
		want: &Policy{
			Servers: []Server{{
				Name:           "default",
				Shared:         bucket(1, time.Millisecond),
				Identity:       []IdentitySource{{JWTClaim: "sub"}},
				Response:       defaultResponse,
				FailureMode:    FailOpen,
				UnreadableBody: UnreadableReject,
			}},
			Redis: Redis{Timeout: 50 * time.Millisecond},
		},
	}, {
		file: "testdata/valid/full.yaml",
		want: &Policy{
			Servers: []Server{{
				Name:    "GitHub_1.prod-eu",
				Shared:  bucket(1_000_000_000, 744*time.Hour),
				PerUser: bucket(20, 90*time.Second),
				Tools: map[string]Tool{
					"search": {Name: "search", Cost: 2, Shared: bucket(10, time.Minute), PerUser: bucket(20, 90*time.Second)},
					"fetch":  {Name: "fetch", Cost: 1},
				},
				Methods: map[string]Method{
					"resources/read": {Name: "resources/read", Cost: 3, PerUser: bucket(50, time.Second)},
				},
				Identity: []IdentitySource{{JWTClaim: "org.id"}, {Header: "x-user-id"}, {SourceAddress: true}},
				Response: Response{
					ErrorCode: -32000, ErrorCodeFor2026: intPtr(429), HTTPStatus: 200,
					Format: FormatToolResult, Message: "Slow down",
				},
				FailureMode:    FailLocal,
				DryRun:         true,
				UnreadableBody: UnreadableContinue,
				Compression:    &Compression{Codings: []string{"gzip", "deflate"}, MaxInflatedBytes: 64 << 20, MaxRatio: 10000},
			}},
			Redis: Redis{
				Username: "extproc",
				Password: "hunter2",
				Timeout:  10 * time.Second,
				Sentinel: &Sentinel{
					MasterName: "mymaster", Addrs: []string{"sentinel-0:26379", "[fd00::1]:26379"},
					Username: "sentinel-user", Password: "sentinel-pass",
				},
				TLS: &TLS{
					CAFile: "/etc/redis/ca.crt", CertFile: "/etc/redis/tls.crt", KeyFile: "/etc/redis/tls.key",
					ServerName: "redis.internal",
				},
			},
		},
	}, {
		file: "testdata/valid/servers.yaml",
		want: &Policy{
			Servers: []Server{{
				Name:     "github",
				Match:    Match{Authority: "mcp.example.com:8443", PathPrefix: "/github"},
				PerUser:  bucket(5, time.Second),
				Identity: []IdentitySource{{Header: "x-user-id"}},
				// Merged field by field; the explicit null unsets the inherited errorCodeFor2026.
				Response:       Response{ErrorCode: -32029, HTTPStatus: 429, Format: FormatToolResult, Message: "Too many calls", HeadersOnAllowed: true},
				FailureMode:    FailClosed,
				DryRun:         true,
				UnreadableBody: UnreadableReject,
				Compression:    &Compression{Codings: []string{"gzip"}, MaxInflatedBytes: 4 << 20, MaxRatio: 100},
			}, {
				Name:  "jira",
				Match: Match{Authority: "mcp.example.com", PathPrefix: "/jira"}, // written "mcp.example.com.", "/jira/"
				Methods: map[string]Method{
					"prompts/get": {Name: "prompts/get", Cost: 1, Shared: bucket(7, time.Hour)},
				},
				Identity:       []IdentitySource{{SourceAddress: true}},
				Response:       Response{ErrorCode: -32029, ErrorCodeFor2026: intPtr(429), HTTPStatus: 429, Format: FormatJSONRPCError, Message: "Too many calls", HeadersOnAllowed: true},
				FailureMode:    FailOpen,
				DryRun:         false,
				UnreadableBody: UnreadableContinue,
				Compression:    &Compression{Codings: []string{"gzip"}, MaxInflatedBytes: 4 << 20, MaxRatio: 100},
			}, {
				Name:           "default",
				Shared:         bucket(100, time.Minute),
				Identity:       []IdentitySource{{Header: "x-user-id"}},
				Response:       Response{ErrorCode: -32029, ErrorCodeFor2026: intPtr(429), HTTPStatus: 429, Format: FormatJSONRPCError, Message: "Too many calls", HeadersOnAllowed: true},
				FailureMode:    FailClosed,
				DryRun:         true,
				UnreadableBody: UnreadableReject,
				Compression:    &Compression{Codings: []string{"gzip"}, MaxInflatedBytes: 4 << 20, MaxRatio: 100},
			}},
			Redis: Redis{
				Timeout: 50 * time.Millisecond,
				Cluster: &Cluster{Addrs: []string{"redis-0:6379", "redis-1:6379"}},
			},
		},
	}, {
		file: "testdata/valid/windows.yaml",
		want: &Policy{
			Servers: []Server{{
				Name:    "docs",
				Shared:  bucket(1000, time.Second),
				PerUser: []Bucket{{MaxTokens: 10, RefillPeriod: time.Minute}, {MaxTokens: 500, RefillPeriod: 24 * time.Hour}},
				Tools: map[string]Tool{
					"search": {Name: "search", Cost: 2, PerUser: bucket(5, 10*time.Second),
						Shared: []Bucket{{MaxTokens: 100, RefillPeriod: time.Minute}, {MaxTokens: 2000, RefillPeriod: time.Hour}}},
				},
				Methods: map[string]Method{
					"prompts/get": {Name: "prompts/get", Cost: 1,
						PerUser: []Bucket{{MaxTokens: 3, RefillPeriod: time.Second}, {MaxTokens: 60, RefillPeriod: time.Hour}}},
				},
				Identity:       []IdentitySource{{JWTClaim: "sub"}},
				Response:       defaultResponse,
				FailureMode:    FailOpen,
				UnreadableBody: UnreadableReject,
			}},
			Redis: Redis{Timeout: 50 * time.Millisecond},
		},
	}, {
		file: "testdata/valid/plans.yaml",
		want: &Policy{
			Servers: []Server{{
				Name:     "saas",
				Shared:   bucket(5000, time.Minute),
				Tools:    map[string]Tool{"search": {Name: "search", Cost: 2}},
				Methods:  map[string]Method{"resources/read": {Name: "resources/read", Cost: 1}},
				Identity: []IdentitySource{{JWTClaim: "sub"}},
				Tenant:   []IdentitySource{{JWTClaim: "org_id"}, {Header: "x-team"}},
				Plans: &Plans{
					From:    []IdentitySource{{JWTClaim: "plan"}},
					Default: "free",
					Limits: map[string]PlanLimits{
						"free": {PerUser: bucket(20, time.Minute), PerTenant: bucket(100, time.Minute)},
						"pro": {
							PerUser: []Bucket{{MaxTokens: 200, RefillPeriod: time.Minute}, {MaxTokens: 20000, RefillPeriod: 24 * time.Hour}},
							Tools:   map[string]PlanSlots{"search": {PerUser: bucket(50, time.Minute)}},
							Methods: map[string]PlanSlots{"resources/read": {PerTenant: bucket(1000, time.Minute)}},
						},
						"internal": {},
					},
				},
				Response:       defaultResponse,
				FailureMode:    FailOpen,
				UnreadableBody: UnreadableReject,
			}},
			Redis: Redis{Timeout: 50 * time.Millisecond},
		},
	}}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			got, err := Load(tt.file)
			if err != nil {
				t.Fatalf("Load(%s): %v", tt.file, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Load(%s) mismatch (-want +got):\n%s", tt.file, diff)
			}
		})
	}
}

func TestExamplesParse(t *testing.T) {
	tests := []struct {
		file    string
		servers []string
	}{
		{"../../examples/policy.yaml", []string{"github"}},
		{"../../examples/multi-server.yaml", []string{"github", "jira", "internal-tools"}},
		{"../../examples/plans.yaml", []string{"saas"}},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			p, err := Load(tt.file)
			if err != nil {
				t.Fatalf("Load(%s):\n%s", tt.file, strings.Join(Problems(err), "\n"))
			}
			var got []string
			for _, s := range p.Servers {
				got = append(got, s.Name)
				if !s.LimitsToolCalls() {
					t.Errorf("server %q: LimitsToolCalls() = false, want true", s.Name)
				}
			}
			if !cmp.Equal(got, tt.servers) {
				t.Errorf("server names = %q, want %q", got, tt.servers)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", MaxFileSize)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("dryRun: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("missing file wraps the os error", func(t *testing.T) {
		_, err := Load(filepath.Join(dir, "nope.yaml"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load(missing) = %v, want an error wrapping fs.ErrNotExist", err)
		}
		if got := Problems(err); len(got) != 1 || got[0] != err.Error() {
			t.Errorf("Problems(read error) = %q, want [err.Error()]", got)
		}
	})
	t.Run("oversized file is refused", func(t *testing.T) {
		_, err := Load(big)
		want := []string{fmt.Sprintf("policy file is larger than %d bytes (the size limit of a Kubernetes ConfigMap)", MaxFileSize)}
		if got := Problems(err); !cmp.Equal(got, want) {
			t.Errorf("Problems(Load(big)) = %q, want %q", got, want)
		}
	})
	t.Run("invalid file names the path then lists problems", func(t *testing.T) {
		_, err := Load(bad)
		// The missing key is reported where its map starts, so first.
		want := "invalid policy file " + bad + ":\n" +
			"rateLimiting (line 1): missing: the policy must limit something (rateLimiting for one MCP server, or servers for several)\n" +
			"dryRun (line 1): must be true or false, got 1"
		if err == nil || err.Error() != want {
			t.Errorf("Load(bad) = %v, want %q", err, want)
		}
		var p *Problem
		if !errors.As(err, &p) || p.Path != "rateLimiting" || p.Line != 1 {
			t.Errorf("errors.As(err, *Problem) = %+v, want the rateLimiting problem at line 1", p)
		}
	})
}

func TestProblemsOfNilIsNil(t *testing.T) {
	if got := Problems(nil); got != nil {
		t.Errorf("Problems(nil) = %q, want nil", got)
	}
}

func TestSuggestOnlyNearMisses(t *testing.T) {
	allowed := []string{"maxTokens", "refillPeriod", "cost", "name"}
	tests := []struct{ name, want string }{
		{"refilPeriod", "refillPeriod"},
		{"refill_period", "refillPeriod"},
		{"MAXTOKENS", "maxTokens"},
		{"cots", ""}, // two edits on a short key is a different word
		{"nam", "name"},
		{"burst", ""},
	}
	for _, tt := range tests {
		if got := suggest(tt.name, allowed); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}
