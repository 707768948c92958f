package harness

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	envoyconfig "github.com/mcp-ratelimit/extproc/envoy"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// Options configure Start. Zero values are usable except ExtprocBinary and Policy.
type Options struct {
	// ExtprocBinary is the built extproc; required.
	ExtprocBinary string
	// Policy is the policy file's YAML, written to a temp file; required.
	Policy string
	// Replicas is how many extproc replicas run behind Envoy, all on one Redis;
	// 0 means 1.
	Replicas int
	// MemoryStore runs extproc without Redis (its embedded in-memory store).
	MemoryStore bool
	// BufferLimitBytes overrides the Envoy body buffer limit; 0: the shipped 4 MiB.
	BufferLimitBytes int
	// MessageTimeout overrides Envoy's ext_proc message_timeout; 0: the shipped one.
	MessageTimeout time.Duration
	// StatelessUpstream runs the demo MCP server without sessions.
	StatelessUpstream bool
	// UpstreamHandler, when set, is the MCP server behind Envoy instead of the
	// demo server (another SDK's, say); Env.Upstream is then nil.
	UpstreamHandler http.Handler
	// UpstreamAddr, when set, is the host:port of an MCP server already running
	// (StartTSServer's Addr, say) that Envoy proxies to instead of the demo
	// server; Env.Upstream is then nil. Set it or UpstreamHandler, not both.
	UpstreamAddr string
	// JWTAuthn adds Envoy's jwt_authn filter before ext_proc (identity source
	// jwtClaim); nil: the shipped configuration, without it.
	JWTAuthn *envoyconfig.JWTAuthn
	// ExtprocLogFormat is extproc's --log-format; empty: "text".
	ExtprocLogFormat string
	// ExtprocArgs are more arguments for every extproc replica (ExtprocOptions.ExtraArgs).
	ExtprocArgs []string
	// ExtProcTLS makes Envoy reach the replicas over TLS (start them with the
	// matching ExtprocArgs); nil: plaintext, as shipped.
	ExtProcTLS *envoyconfig.ExtProcTLS
	// RedisAddrForExtproc, when set, maps Redis's address to the one extproc dials,
	// e.g. a DelayProxy in front of it; nil: Redis itself.
	RedisAddrForExtproc func(redisAddr string) string
}

// Env is one running deployment: MCP clients talk to URL.
type Env struct {
	// URL is the MCP endpoint through Envoy: http://127.0.0.1:port/mcp.
	URL string
	// BaseURL is Envoy's listener without a path: http://127.0.0.1:port. Envoy routes
	// every path to the upstream; the demo server serves MCP on every path.
	BaseURL string
	// Redis is nil with MemoryStore.
	Redis    *Redis
	Extprocs []*Extproc
	Envoy    *Envoy
	// Upstream counts the tool calls that reached the MCP server; nil with
	// Options.UpstreamHandler or Options.UpstreamAddr.
	Upstream *demo.Server
	// PolicyPath is the policy file extproc reads.
	PolicyPath string
}

// Start starts Redis, the upstream MCP server, the extproc replicas and Envoy, each
// ready before Start returns, each stopped in tb.Cleanup.
func Start(tb testing.TB, o Options) *Env {
	tb.Helper()
	// Find both tools first, so that a missing one skips before anything starts.
	docker, why := useDocker()
	if docker {
		tb.Logf("harness: Redis and Envoy from testcontainers-go (%s)", why)
	} else {
		RedisTool.Require(tb)
		EnvoyTool.Require(tb)
		tb.Logf("harness: Redis and Envoy from local binaries (%s)", why)
	}

	env := &Env{PolicyPath: filepath.Join(tb.TempDir(), "policy.yaml")}
	if err := os.WriteFile(env.PolicyPath, []byte(o.Policy), 0o600); err != nil {
		tb.Fatal(err)
	}

	if o.UpstreamAddr != "" && o.UpstreamHandler != nil {
		tb.Fatal("harness: Options.UpstreamAddr and Options.UpstreamHandler are both set; Envoy has one upstream")
	}
	upstreamAddr := o.UpstreamAddr
	if upstreamAddr == "" {
		handler := o.UpstreamHandler
		if handler == nil {
			env.Upstream = demo.New(demo.Options{Stateless: o.StatelessUpstream})
			handler = env.Upstream
		}
		up := httptest.NewServer(handler)
		tb.Cleanup(func() {
			// SSE streams would keep Close waiting; Envoy has stopped by now anyway.
			up.CloseClientConnections()
			up.Close()
		})
		upstreamAddr = up.Listener.Addr().String()
	}

	var redisURL string
	if !o.MemoryStore {
		env.Redis = StartRedis(tb)
		redisURL = env.Redis.URL()
		if o.RedisAddrForExtproc != nil {
			redisURL = "redis://" + o.RedisAddrForExtproc(env.Redis.Addr) + "/0"
		}
	}
	replicas := max(o.Replicas, 1)
	p := envoyconfig.Defaults()
	p.Upstream = []envoyconfig.Endpoint{endpoint(tb, upstreamAddr)}
	p.ExtProc = nil
	for i := range replicas {
		name := "extproc"
		if replicas > 1 {
			name += "-" + strconv.Itoa(i+1)
		}
		e := StartExtproc(tb, ExtprocOptions{
			Binary: o.ExtprocBinary, ConfigPath: env.PolicyPath, RedisURL: redisURL, Name: name,
			LogFormat: o.ExtprocLogFormat, ExtraArgs: o.ExtprocArgs,
		})
		env.Extprocs = append(env.Extprocs, e)
		p.ExtProc = append(p.ExtProc, endpoint(tb, e.GRPCAddr))
	}
	if o.BufferLimitBytes != 0 {
		p.BufferLimitBytes = o.BufferLimitBytes
	}
	if o.MessageTimeout != 0 {
		p.MessageTimeout = o.MessageTimeout
	}
	p.JWTAuthn = o.JWTAuthn
	p.ExtProcTLS = o.ExtProcTLS
	env.Envoy = StartEnvoy(tb, p)
	env.BaseURL = "http://" + env.Envoy.ListenAddr
	env.URL = env.BaseURL + "/mcp"
	return env
}

func endpoint(tb testing.TB, addr string) envoyconfig.Endpoint {
	tb.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		tb.Fatal(err)
	}
	return envoyconfig.Endpoint{Host: host, Port: n}
}
