package main

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

// Envoy filter set-ups.
const (
	filterNone    = "none"
	filterExtproc = "extproc"
	filterLocalRL = "local_ratelimit"
	// filterNullProc is the ext_proc filter of (c) in front of nullproc instead
	// of extproc.
	filterNullProc = "nullproc"
	// filterRateLimit is Envoy's global rate-limit filter (envoy.filters.http.ratelimit)
	// calling loadbench's null rate-limit service ("nullrls").
	filterRateLimit = "ratelimit"
	storeMemory     = "memory"
	storeRedis      = "redis"
	policyHigh      = "high"
	policyFlood     = "flood"
)

// scenario is one configuration of the run.
type scenario struct {
	Name        string
	Desc        string
	Filter      string
	Store       string
	SkipHeaders bool
	// UnixSocket: Envoy reaches the processor over a Unix socket, as a sidecar in
	// the same pod or host would, instead of TCP on loopback.
	UnixSocket bool
	Policy     string
	// Old: the processor is the extproc binary given by -old-extproc (built
	// from an older commit), to compare two builds in one run.
	Old bool
	// SearchPerTen: calls in ten that go to the tool the flood policy limits.
	SearchPerTen int
	// Transport is nullproc's -transport for Filter filterNullProc; empty is
	// grpc-go, extproc's.
	Transport string
}

var scenarios = []scenario{
	{Name: "a", Desc: "Envoy, no filter", Filter: filterNone},
	{Name: "b", Desc: "Envoy + extproc, in-memory store", Filter: filterExtproc, Store: storeMemory, Policy: policyHigh},
	{Name: "c", Desc: "Envoy + extproc, Redis", Filter: filterExtproc, Store: storeRedis, Policy: policyHigh},
	{Name: "d", Desc: "Envoy local_ratelimit (never rejects)", Filter: filterLocalRL},
	{Name: "c-flood", Desc: "Envoy + extproc, Redis, 90% of calls over the limit", Filter: filterExtproc, Store: storeRedis, Policy: policyFlood, SearchPerTen: 9},
	{Name: "e", Desc: "(c) with request headers SKIP, attributes instead", Filter: filterExtproc, Store: storeRedis, Policy: policyHigh, SkipHeaders: true},
	{Name: "c-old", Desc: "(c) with the extproc binary of -old-extproc", Filter: filterExtproc, Store: storeRedis, Policy: policyHigh, Old: true},
	{Name: "n", Desc: "Envoy + a null ext_proc server (extproc's transport, answers continue, unmarshals only)", Filter: filterNullProc},
	{Name: "n-connect", Desc: "(n) served by connect-go on net/http's HTTP/2 server (h2c, extproc's windows)", Filter: filterNullProc, Transport: transportConnect},
	{Name: "u", Desc: "(c) with Envoy reaching extproc over a Unix socket", Filter: filterExtproc, Store: storeRedis, Policy: policyHigh, UnixSocket: true},
	{Name: "r", Desc: "Envoy global ratelimit filter + a null rate-limit service (answers OK)", Filter: filterRateLimit},
}

// scenarioNames lists the configurations; withOld includes those that need
// -old-extproc, which the default list leaves out.
func scenarioNames(withOld bool) []string {
	var n []string
	for _, s := range scenarios {
		if s.Old && !withOld {
			continue
		}
		n = append(n, s.Name)
	}
	return n
}

func scenarioByName(name string) (scenario, bool) {
	for _, s := range scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return scenario{}, false
}

func needsProbe(configs []string) bool {
	for _, c := range configs {
		if s, _ := scenarioByName(c); s.SkipHeaders {
			return true
		}
	}
	return false
}

// Policies. "high" limits every call with buckets that never run dry (1e6 tokens a
// second, the policy's highest rate), so every request costs a full decision: the
// shared bucket, the tool's shared bucket and the tool's per-user bucket. The user is
// the client address (identity sourceAddress), which reaches the processor as an
// attribute in every Envoy mode, so (c) and (e) make the same decisions. "flood"
// gives the tool search a bucket of 10 tokens a minute and leaves echo unlimited:
// with 9 calls in 10 to search, 90% are rejected.
var policies = map[string]string{
	policyHigh: `server: bench
rateLimiting:
  shared: {maxTokens: 1000000, refillPeriod: 1s}
  tools:
    - name: echo
      shared: {maxTokens: 1000000, refillPeriod: 1s}
      perUser: {maxTokens: 1000000, refillPeriod: 1s}
    - name: search
      shared: {maxTokens: 1000000, refillPeriod: 1s}
      perUser: {maxTokens: 1000000, refillPeriod: 1s}
identity:
  - sourceAddress: {}
`,
	policyFlood: `server: bench
rateLimiting:
  tools:
    - name: search
      shared: {maxTokens: 10, refillPeriod: 1m}
identity:
  - sourceAddress: {}
`,
}

// probeAttributes are the request_attributes of configuration (e): the client
// address (identity sourceAddress) and what the headers phase would otherwise carry:
// :authority and :path (server routing), MCP-Protocol-Version (errorCodeFor2026) and
// a header identity (x-user-id). Each header is its own CEL expression: Envoy 1.40
// sends the whole request.headers map as the string "CelMap value", not as a struct.
// A header the request does not carry is left out of the attributes.
// content-encoding and content-type are not listed: loadbench's bodies are plain
// UTF-8 JSON. A deployment would need them too, or a gzip or UTF-16 body could not
// be read and would continue unlimited.
var probeAttributes = []string{"source.address", "request.host", "request.path",
	"request.headers['mcp-protocol-version']", "request.headers['x-user-id']"}

//go:embed envoy.yaml.tmpl
var envoyTemplate string

var envoyTmpl = template.Must(template.New("envoy").Option("missingkey=error").Parse(envoyTemplate))

// envoyParams fill envoy.yaml.tmpl.
type envoyParams struct {
	Filter       string
	SkipHeaders  bool
	Attributes   []string
	ListenPort   int
	AdminPort    int
	UpstreamPort int
	// The processor's address (extproc, nullproc, or for (r) the null rate-limit
	// service): ExtprocSocket (a Unix socket path) when set, else
	// 127.0.0.1:ExtprocPort.
	ExtprocPort   int
	ExtprocSocket string
}

// envoyParamsFor returns the Envoy template's parameters for sc; the caller fills
// in the ports. (n) gets the Envoy configuration of (c): only the processor
// behind it differs.
func envoyParamsFor(sc scenario) envoyParams {
	p := envoyParams{Filter: sc.Filter, SkipHeaders: sc.SkipHeaders, Attributes: []string{"source.address"}}
	if sc.Filter == filterNullProc {
		p.Filter = filterExtproc
	}
	if sc.SkipHeaders {
		p.Attributes = probeAttributes
	}
	return p
}

// maxSocketPath is the size of sun_path on Linux, the terminating NUL included.
const maxSocketPath = 108

// processorAddr is where a started processor listens: a Unix socket path, or a
// loopback TCP port.
type processorAddr struct {
	port   int
	socket string
}

func renderEnvoy(p envoyParams) ([]byte, error) {
	var b bytes.Buffer
	if err := envoyTmpl.Execute(&b, p); err != nil {
		return nil, fmt.Errorf("render envoy config: %w", err)
	}
	return b.Bytes(), nil
}

// runner holds what lives for the whole run: the binaries, the upstream and Redis.
type runner struct {
	f        flags
	dir      string
	log      io.Writer
	envoyBin string
	redisBin string
	extproc  string

	upstream     *proc
	upstreamPort int
	redis        *proc
	redisAddr    string
	rdb          *redis.Client
	// runs counts runScenario calls: it numbers each run's files in the run
	// directory, so that -keep keeps every round's and every repeat's.
	runs int
}

func newRunner(ctx context.Context, f flags, dir string, log io.Writer) (*runner, error) {
	r := &runner{f: f, dir: dir, log: log}
	var err error
	if r.envoyBin, r.redisBin, err = findTools(); err != nil {
		return nil, err
	}
	fmt.Fprintln(log, "loadbench: building ./cmd/extproc")
	if r.extproc, err = harness.BuildExtproc(ctx, dir); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			r.close()
		}
	}()

	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if r.upstreamPort, err = freePort(); err != nil {
		return nil, err
	}
	if r.upstream, err = startProc(dir, "upstream", self, "upstream", "-kind", f.upstream, "-addr", loopback(r.upstreamPort)); err != nil {
		return nil, err
	}
	if err := r.upstream.waitReady(ctx, func(ctx context.Context) error { return tcpOpen(ctx, loopback(r.upstreamPort)) }); err != nil {
		return nil, err
	}

	redisPort, err := freePort()
	if err != nil {
		return nil, err
	}
	r.redisAddr = loopback(redisPort)
	if r.redis, err = startProc(dir, "redis-server", r.redisBin, "--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning"); err != nil {
		return nil, err
	}
	r.rdb = redis.NewClient(&redis.Options{Addr: r.redisAddr})
	if err := r.redis.waitReady(ctx, func(ctx context.Context) error { return r.rdb.Ping(ctx).Err() }); err != nil {
		return nil, err
	}
	ok = true
	return r, nil
}

func (r *runner) close() {
	if r.rdb != nil {
		r.rdb.Close()
	}
	for _, p := range []*proc{r.redis, r.upstream} {
		if p != nil {
			if err := p.stop(); err != nil {
				fmt.Fprintln(r.log, "loadbench:", err)
			}
		}
	}
}

// evalCalls returns how many EVAL and EVALSHA calls Redis has served.
func (r *runner) evalCalls(ctx context.Context) (int64, error) {
	info, err := r.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, fmt.Errorf("redis INFO commandstats: %w", err)
	}
	return parseEvalCalls(info), nil
}

// parseEvalCalls sums calls= of cmdstat_eval and cmdstat_evalsha in INFO output.
func parseEvalCalls(info string) int64 {
	var n int64
	for _, l := range strings.Split(info, "\n") {
		l = strings.TrimSpace(l)
		rest, ok := strings.CutPrefix(l, "cmdstat_evalsha:")
		if !ok {
			rest, ok = strings.CutPrefix(l, "cmdstat_eval:")
		}
		if !ok {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				c, _ := strconv.ParseInt(v, 10, 64)
				n += c
			}
		}
	}
	return n
}

// result is one configuration's figures.
type result struct {
	sc   scenario
	load loadResult
	// cpu is CPU time in the window per process: envoy, extproc, redis-server,
	// upstream; loadgen apart.
	cpu        map[string]time.Duration
	loadgenCPU time.Duration
	evalCalls  int64
	// extprocMsgs: ext_proc messages Envoy sent in the window, or for (r) the
	// rate-limit service's answers (ok, over_limit, error); extprocFailures:
	// streams failed, message timeouts and failure_mode_allowed (ext_proc's or
	// the ratelimit filter's), which would mean requests went through undecided.
	extprocMsgs     int64
	extprocFailures int64
}

func (r result) rps() float64 {
	if r.load.Elapsed <= 0 {
		return 0
	}
	return float64(r.load.Requests()) / r.load.Elapsed.Seconds()
}

// systemCPU is the CPU of everything but the load generator.
func (r result) systemCPU() time.Duration {
	var t time.Duration
	for _, d := range r.cpu {
		t += d
	}
	return t
}

// per1k returns d per thousand requests, in seconds.
func (r result) per1k(d time.Duration) float64 {
	if r.load.Requests() == 0 {
		return 0
	}
	return d.Seconds() * 1000 / float64(r.load.Requests())
}

// statsFilter is the /stats filter (a regular expression) that selects the
// counters of Envoy filter f: ext_proc's, or the ratelimit filter's, which Envoy
// keeps under the route's cluster (cluster.mcp_upstream.ratelimit.*). For
// configurations without either it selects nothing.
func statsFilter(f string) string {
	if f == filterRateLimit {
		return `\.ratelimit\.`
	}
	return "ext_proc"
}

// snapshots implements window: it reads CPU times and counters at the start and the
// end of the measured window.
type snapshots struct {
	r     *runner
	envoy *envoy
	procs map[string]*proc
	res   *result

	cpu0    map[string]time.Duration
	self0   time.Duration
	eval0   int64
	counts0 map[string]int64
}

func (s *snapshots) read(ctx context.Context) (map[string]time.Duration, time.Duration, int64, map[string]int64, error) {
	cpu := map[string]time.Duration{}
	for name, p := range s.procs {
		t, err := cpuTime(p.pid())
		if err != nil {
			return nil, 0, 0, nil, fmt.Errorf("%s CPU: %w", name, err)
		}
		cpu[name] = t
	}
	self, err := cpuTime(os.Getpid())
	if err != nil {
		return nil, 0, 0, nil, err
	}
	var eval int64
	if s.res.sc.Store == storeRedis {
		if eval, err = s.r.evalCalls(ctx); err != nil {
			return nil, 0, 0, nil, err
		}
	}
	counts, err := s.envoy.counters(ctx, statsFilter(s.res.sc.Filter))
	if err != nil {
		return nil, 0, 0, nil, err
	}
	return cpu, self, eval, counts, nil
}

func (s *snapshots) begin(ctx context.Context) error {
	var err error
	s.cpu0, s.self0, s.eval0, s.counts0, err = s.read(ctx)
	return err
}

func (s *snapshots) end(ctx context.Context) error {
	cpu, self, eval, counts, err := s.read(ctx)
	if err != nil {
		return err
	}
	s.res.cpu = map[string]time.Duration{}
	for name, t := range cpu {
		s.res.cpu[name] = t - s.cpu0[name]
	}
	s.res.loadgenCPU = self - s.self0
	s.res.evalCalls = eval - s.eval0
	for name, v := range counts {
		d := v - s.counts0[name]
		switch {
		case strings.HasSuffix(name, ".stream_msgs_sent"),
			strings.HasSuffix(name, ".ratelimit.ok"), strings.HasSuffix(name, ".ratelimit.over_limit"),
			strings.HasSuffix(name, ".ratelimit.error"):
			s.res.extprocMsgs += d
		case strings.HasSuffix(name, ".streams_failed"), strings.HasSuffix(name, ".message_timeouts"),
			strings.HasSuffix(name, ".failure_mode_allowed"):
			s.res.extprocFailures += d
		}
	}
	return nil
}

// usesProcessor tells whether sc's Envoy calls a process of its own:
// extproc, nullproc or the null rate-limit service.
func usesProcessor(sc scenario) bool {
	return sc.Filter == filterExtproc || sc.Filter == filterNullProc || sc.Filter == filterRateLimit
}

// runScenario starts the configuration's extproc and Envoy, loads them and stops them.
func (r *runner) runScenario(ctx context.Context, sc scenario) (result, error) {
	procs := map[string]*proc{"upstream": r.upstream}
	r.runs++
	tag := fmt.Sprintf("%02d-%s", r.runs, sc.Name) // names this run's files
	p := envoyParamsFor(sc)
	if sc.Store == storeRedis {
		procs["redis-server"] = r.redis
		// Buckets from an earlier configuration must not decide this one.
		if err := r.rdb.FlushAll(ctx).Err(); err != nil {
			return result{}, fmt.Errorf("redis FLUSHALL: %w", err)
		}
	}
	if usesProcessor(sc) {
		x, addr, err := r.startProcessor(ctx, sc, tag)
		if err != nil {
			return result{}, err
		}
		defer func() {
			if err := x.stop(); err != nil {
				fmt.Fprintln(r.log, "loadbench:", err)
			}
		}()
		procs["extproc"] = x
		p.ExtprocPort, p.ExtprocSocket = addr.port, addr.socket
	}
	e, err := r.startEnvoy(ctx, tag, p)
	if err != nil {
		return result{}, err
	}
	defer func() {
		if err := e.stop(); err != nil {
			fmt.Fprintln(r.log, "loadbench:", err)
		}
	}()
	procs["envoy"] = e.proc

	res := result{sc: sc}
	o := r.f.load
	o.URL = "http://" + e.listen + "/mcp"
	o.SearchPerTen = sc.SearchPerTen
	lr, err := runLoad(ctx, o, &snapshots{r: r, envoy: e, procs: procs, res: &res})
	if err != nil {
		return result{}, err
	}
	res.load = lr
	if lr.Status[http.StatusOK]+lr.Status[http.StatusTooManyRequests] == 0 {
		return result{}, fmt.Errorf("no request succeeded (statuses %v, %d errors, first: %s)", lr.Status, lr.Errors, lr.FirstErr)
	}
	for _, pr := range procs {
		if pr.exited() {
			return result{}, fmt.Errorf("%s exited during the run: %v\n%s", pr.Name, pr.Err(), pr.tail())
		}
	}
	return res, nil
}

// startProcessor starts sc's processor and waits for its /readyz: the built
// extproc with sc's policy, at the default log level (info, which logs no line
// per request), for (n) and (n-connect) loadbench's own null processor
// ("nullproc", with sc's -transport), or for (r) its null rate-limit service
// ("nullrls"). The last two are measured under the name extproc, so that the
// CPU table has one column for whatever Envoy calls.
func (r *runner) startProcessor(ctx context.Context, sc scenario, tag string) (*proc, processorAddr, error) {
	var none processorAddr
	addr, grpcAddr, err := r.processorListenAddr(sc, tag)
	if err != nil {
		return nil, none, err
	}
	adminPort, err := freePort()
	if err != nil {
		return nil, none, err
	}
	var name, bin string
	var args []string
	switch {
	case sc.Filter == filterNullProc:
		if bin, err = os.Executable(); err != nil {
			return nil, none, err
		}
		name, args = "nullproc-"+tag, []string{"nullproc", "-addr", grpcAddr, "-admin-addr", loopback(adminPort)}
		if sc.Transport != "" {
			args = append(args, "-transport", sc.Transport)
		}
	case sc.Filter == filterRateLimit:
		if bin, err = os.Executable(); err != nil {
			return nil, none, err
		}
		name, args = "nullrls-"+tag, []string{"nullrls", "-addr", grpcAddr, "-admin-addr", loopback(adminPort)}
	default:
		policy := filepath.Join(r.dir, "policy-"+tag+".yaml")
		if err := os.WriteFile(policy, []byte(policies[sc.Policy]), 0o600); err != nil {
			return nil, none, err
		}
		name, bin = "extproc-"+tag, r.extproc
		if sc.Old {
			if r.f.oldExtproc == "" {
				return nil, none, errors.New("configuration c-old needs -old-extproc PATH")
			}
			bin = r.f.oldExtproc
		}
		args = []string{"--grpc-addr", grpcAddr, "--admin-addr", loopback(adminPort),
			"--config", policy, "--log-format", "text"}
		if sc.Store == storeRedis {
			args = append(args, "--redis-url", "redis://"+r.redisAddr+"/0")
		}
	}
	var env []string
	if n := r.f.extprocProcs; n > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(n))
	}
	x, err := startProcEnv(r.dir, name, bin, env, args...)
	if err != nil {
		return nil, none, err
	}
	if err := x.waitReady(ctx, func(ctx context.Context) error {
		return harness.HTTPOK(ctx, "http://"+loopback(adminPort)+"/readyz")
	}); err != nil {
		_ = x.stop()
		return nil, none, err
	}
	return x, addr, nil
}

// processorListenAddr picks where sc's processor listens, and the same as a
// --grpc-addr / -addr value.
func (r *runner) processorListenAddr(sc scenario, tag string) (processorAddr, string, error) {
	if sc.UnixSocket {
		path := filepath.Join(r.dir, "extproc-"+tag+".sock")
		if len(path) >= maxSocketPath {
			return processorAddr{}, "", fmt.Errorf("unix socket path %s is %d bytes, the limit is %d: set TMPDIR to a shorter directory", path, len(path), maxSocketPath-1)
		}
		return processorAddr{socket: path}, "unix://" + path, nil
	}
	port, err := freePort()
	if err != nil {
		return processorAddr{}, "", err
	}
	return processorAddr{port: port}, loopback(port), nil
}
