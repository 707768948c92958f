package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/processor"
)

// options is the resolved command line of the server: the flags, their
// environment fallbacks and the secrets read from the environment only.
type options struct {
	configPath string // empty: no policy, nothing is limited
	grpcAddr   string // host:port, or unix:///path
	adminAddr  string // host:port
	// redisURL is empty for "use the policy's redis block, else memory".
	redisURL string
	// redisPassword comes from REDIS_PASSWORD only: a password given as a flag
	// would be visible to every user of the machine through ps.
	redisPassword string
	// redisSentinelPassword, from REDIS_SENTINEL_PASSWORD only, is the sentinels'
	// own password, for the same reason.
	redisSentinelPassword string
	logLevel              slog.Level
	logFormat             string // "json" or "text"
	shutdownTimeout       time.Duration
	// maxMessageBytes bounds one ext_proc message (processor.Limits).
	maxMessageBytes int
	// maxInflightBytes bounds the bytes of unfinished messages held across all
	// gRPC streams (processor.Limits).
	maxInflightBytes int64
	// identityKey is the secret per-user bucket keys hash identities under, from
	// --identity-key-file or EXTPROC_IDENTITY_KEY (never a flag, so that ps
	// cannot show it); empty: none, identities hashed without a secret.
	identityKey string
	// grpcTLSCert and grpcTLSKey, both or neither, make the gRPC listener speak
	// TLS; grpcClientCA, which needs them, also makes it require client
	// certificates signed by one of its CAs. Empty: plaintext.
	grpcTLSCert, grpcTLSKey, grpcClientCA string
	// pollInterval is how often the policy file (and the TLS files) are checked
	// for changes; zero means defaultPollInterval. Not a flag: tests shorten it.
	pollInterval time.Duration
}

// usageError is a mistake on the command line; main exits 2 for it.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// flagSpec describes one flag: its environment fallback, its default, and how a
// value is checked and stored. Keeping them in one table makes the usage text,
// the env fallback and the validation agree.
type flagSpec struct {
	name, env, def, help string
	set                  func(o *options, v string) error
}

func flagSpecs() []flagSpec {
	return []flagSpec{
		{
			name: "config", env: "EXTPROC_CONFIG",
			help: "policy file (YAML); without one nothing is limited",
			set: func(o *options, v string) error {
				o.configPath = v
				return nil
			},
		},
		{
			name: "grpc-addr", env: "EXTPROC_GRPC_ADDR", def: ":50051",
			help: "ext_proc and gRPC health listener: host:port, or unix:///path for a Unix socket",
			set: func(o *options, v string) error {
				if _, _, err := parseListenAddr(v); err != nil {
					return err
				}
				o.grpcAddr = v
				return nil
			},
		},
		{
			name: "admin-addr", env: "EXTPROC_ADMIN_ADDR", def: ":8081",
			help: "HTTP listener for /metrics, /healthz and /readyz: host:port",
			set: func(o *options, v string) error {
				if _, _, err := net.SplitHostPort(v); err != nil {
					return fmt.Errorf("want host:port: %w", err)
				}
				o.adminAddr = v
				return nil
			},
		},
		{
			name: "redis-url", env: "REDIS_URL",
			help: "redis://[user:pass@]host:port/db or rediss:// (TLS); empty: the policy's redis block, else the in-memory store (one replica only)",
			set: func(o *options, v string) error {
				if v == "" {
					return nil
				}
				if err := checkRedisURL(v); err != nil {
					return err
				}
				o.redisURL = v
				return nil
			},
		},
		{
			name: "log-level", env: "EXTPROC_LOG_LEVEL", def: "info",
			help: "debug, info, warn or error",
			set: func(o *options, v string) error {
				levels := map[string]slog.Level{
					"debug": slog.LevelDebug, "info": slog.LevelInfo,
					"warn": slog.LevelWarn, "error": slog.LevelError,
				}
				l, ok := levels[strings.ToLower(v)]
				if !ok {
					return errors.New("want debug, info, warn or error")
				}
				o.logLevel = l
				return nil
			},
		},
		{
			name: "log-format", env: "EXTPROC_LOG_FORMAT", def: "json",
			help: "json or text",
			set: func(o *options, v string) error {
				v = strings.ToLower(v)
				if v != "json" && v != "text" {
					return errors.New("want json or text")
				}
				o.logFormat = v
				return nil
			},
		},
		{
			name: "shutdown-timeout", env: "EXTPROC_SHUTDOWN_TIMEOUT", def: "15s",
			help: "after SIGTERM, how long in-flight streams may run before they are cut",
			set: func(o *options, v string) error {
				d, err := time.ParseDuration(v)
				if err != nil {
					return errors.New("want a Go duration such as 15s")
				}
				if d <= 0 {
					return errors.New("must be > 0")
				}
				o.shutdownTimeout = d
				return nil
			},
		},
		{
			name: "identity-key-file", env: "EXTPROC_IDENTITY_KEY_FILE",
			help: "file holding the identity key: a secret of 32 bytes or more (one trailing newline dropped), the same on every replica, that per-user bucket keys hash identities under; read once at start",
			set: func(o *options, v string) error {
				if v == "" {
					return nil
				}
				b, err := os.ReadFile(v)
				if err != nil {
					return err
				}
				k := trimNewline(string(b))
				if err := checkIdentityKey(k); err != nil {
					return err
				}
				o.identityKey = k
				return nil
			},
		},
		{
			name: "grpc-tls-cert", env: "EXTPROC_GRPC_TLS_CERT",
			help: "PEM certificate chain the gRPC listener presents (with --grpc-tls-key): TLS 1.2 or later, re-read when the file changes; empty: plaintext",
			set: func(o *options, v string) error {
				o.grpcTLSCert = v
				return nil
			},
		},
		{
			name: "grpc-tls-key", env: "EXTPROC_GRPC_TLS_KEY",
			help: "PEM private key of --grpc-tls-cert, re-read with it",
			set: func(o *options, v string) error {
				o.grpcTLSKey = v
				return nil
			},
		},
		{
			name: "grpc-client-ca", env: "EXTPROC_GRPC_CLIENT_CA",
			help: "PEM CA certificates for mutual TLS: clients must present a certificate signed by one of them (needs --grpc-tls-cert); re-read when the file changes",
			set: func(o *options, v string) error {
				o.grpcClientCA = v
				return nil
			},
		},
		{
			name: "grpc-max-message-bytes", env: "EXTPROC_GRPC_MAX_MESSAGE_BYTES", def: strconv.Itoa(processor.DefaultMaxMessageBytes),
			help: "largest ext_proc message accepted: keep it above Envoy's buffer limit (4 MiB shipped) plus the request's headers, or a body near that limit ends its stream and Envoy's failure_mode_allow lets it through undecided",
			set: func(o *options, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 64<<10 || n > 256<<20 {
					return errors.New("want a number of bytes from 65536 to 268435456")
				}
				o.maxMessageBytes = n
				return nil
			},
		},
		{
			name: "grpc-max-inflight-bytes", env: "EXTPROC_GRPC_MAX_INFLIGHT_BYTES", def: strconv.Itoa(processor.DefaultMaxInflightBytes),
			help: "bytes of received, unfinished messages held across all gRPC streams and connections; past it (or past it plus 64 MiB of live Go heap) the streams that have waited longest for a whole message are canceled; the Go memory limit is set to it plus 128 MiB unless GOMEMLIMIT is set. At least 4 × --grpc-max-message-bytes",
			set: func(o *options, v string) error {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil || n < 1<<20 || n > 1<<40 {
					return errors.New("want a number of bytes from 1048576 to 1099511627776")
				}
				o.maxInflightBytes = n
				return nil
			},
		},
	}
}

// parseFlags resolves the server's options: a flag wins over its environment
// variable, which wins over the default. An empty environment variable counts as
// unset. getenv is the only way the environment is read. Errors are usageErrors,
// except flag.ErrHelp, returned as is for -h and --help.
//
// Parsing is the standard library's flag package; the environment fallback is
// the one small loop below, kept by hand so that every error names where the
// value came from (`--redis-url` or `REDIS_URL`) and what would be accepted.
func parseFlags(args []string, getenv func(string) string) (options, error) {
	specs := flagSpecs()
	fs := flag.NewFlagSet("extproc", flag.ContinueOnError)
	// The flag package would print its own message and usage; run prints ours.
	fs.SetOutput(io.Discard)
	values := make(map[string]*string, len(specs))
	for _, s := range specs {
		values[s.name] = fs.String(s.name, s.def, s.help)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return options{}, err
		}
		return options{}, usageError{err}
	}
	if fs.NArg() > 0 {
		return options{}, usageErrorf("unexpected argument %q (subcommands come before any flag)", fs.Arg(0))
	}
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	var o options
	for _, s := range specs {
		v, source := *values[s.name], "--"+s.name
		if !given[s.name] {
			if ev := getenv(s.env); ev != "" {
				v, source = ev, s.env
			}
		}
		if err := s.set(&o, v); err != nil {
			return options{}, usageErrorf("invalid %s %q: %w", source, redactURL(v), err)
		}
	}
	// The files are read at start (serve), where a bad one is reported as such;
	// here only their combination is checked.
	if (o.grpcTLSCert == "") != (o.grpcTLSKey == "") {
		return options{}, usageErrorf("--grpc-tls-cert and --grpc-tls-key (or EXTPROC_GRPC_TLS_CERT and EXTPROC_GRPC_TLS_KEY) go together: set both for TLS, or neither")
	}
	if o.maxInflightBytes < 4*int64(o.maxMessageBytes) {
		// Below that, a few of the largest bodies arriving at once would pass
		// it, and Envoy's own streams would be canceled.
		return options{}, usageErrorf("--grpc-max-inflight-bytes (or EXTPROC_GRPC_MAX_INFLIGHT_BYTES) %d is under 4 × --grpc-max-message-bytes (%d)", o.maxInflightBytes, o.maxMessageBytes)
	}
	if o.grpcClientCA != "" && o.grpcTLSCert == "" {
		// Client certificates are only ever asked for inside TLS: serving
		// plaintext here would silently drop the authentication asked for.
		return options{}, usageErrorf("--grpc-client-ca (or EXTPROC_GRPC_CLIENT_CA) needs --grpc-tls-cert and --grpc-tls-key: mutual TLS is TLS first")
	}
	o.redisPassword = getenv("REDIS_PASSWORD")
	o.redisSentinelPassword = getenv("REDIS_SENTINEL_PASSWORD")
	if k := getenv("EXTPROC_IDENTITY_KEY"); k != "" {
		// Two sources of a secret every replica must share are refused rather
		// than ranked: a replica that picked the other one would count every
		// user in buckets of its own, and nothing would say so.
		if o.identityKey != "" {
			return options{}, usageErrorf("EXTPROC_IDENTITY_KEY and --identity-key-file (or EXTPROC_IDENTITY_KEY_FILE) are both set: set one")
		}
		k = trimNewline(k)
		if err := checkIdentityKey(k); err != nil {
			// Never quotes the value: it is the secret.
			return options{}, usageErrorf("invalid EXTPROC_IDENTITY_KEY: %w", err)
		}
		o.identityKey = k
	}
	return o, nil
}

// trimNewline drops one trailing newline (LF or CRLF): what echo and most
// editors add to a key file, and never meant as part of the key.
func trimNewline(k string) string {
	if k, ok := strings.CutSuffix(k, "\n"); ok {
		k, _ = strings.CutSuffix(k, "\r")
		return k
	}
	return k
}

// checkIdentityKey refuses a key too short to resist guessing. Its errors never
// quote the key.
func checkIdentityKey(k string) error {
	if len(k) < bucket.MinIdentityKeyBytes {
		return fmt.Errorf("identity key is %d bytes, want at least %d (generate one with: openssl rand -hex 32)", len(k), bucket.MinIdentityKeyBytes)
	}
	return nil
}

// parseListenAddr splits a --grpc-addr value into a network and an address for
// net.Listen.
func parseListenAddr(addr string) (network, address string, err error) {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if path == "" {
			return "", "", errors.New("want unix:///path/to/socket")
		}
		return "unix", path, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", fmt.Errorf("want host:port or unix:///path: %w", err)
	}
	return "tcp", addr, nil
}

// checkRedisURL rejects what go-redis could never dial, before anything starts.
// Its errors never quote the URL: it may hold a password.
func checkRedisURL(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("not a URL")
	}
	switch u.Scheme {
	case "redis", "rediss":
		if u.Host == "" {
			return errors.New("want redis://[user:pass@]host:port/db")
		}
	case "unix":
		if u.Path == "" {
			return errors.New("want unix:///path/to/redis.sock")
		}
	default:
		return errors.New("scheme must be redis, rediss or unix")
	}
	return nil
}

// redactURL hides the password of a URL-shaped value, so that error messages
// and logs can quote it; other values are returned unchanged.
func redactURL(v string) string {
	u, err := url.Parse(v)
	if err != nil || u.User == nil {
		if strings.Contains(v, "@") {
			// Unparseable but maybe holding credentials: quote nothing of them.
			return "<redacted>"
		}
		return v
	}
	return u.Redacted()
}

const usageText = `extproc: an Envoy ext_proc external processor that rate-limits MCP traffic.

Usage:
  extproc [flags]               serve
  extproc check-config FILE     validate a policy file
  extproc version               print the version
  extproc help                  print this help

Flags (each also read from an environment variable; the flag wins):
`

func printUsage(w io.Writer) {
	var b strings.Builder
	b.WriteString(usageText)
	for _, s := range flagSpecs() {
		fmt.Fprintf(&b, "  --%s (env %s", s.name, s.env)
		if s.def != "" {
			fmt.Fprintf(&b, ", default %s", s.def)
		}
		fmt.Fprintf(&b, ")\n      %s\n", s.help)
	}
	b.WriteString("\nREDIS_PASSWORD, if set, overrides the Redis password of the URL or the policy.\n")
	b.WriteString("REDIS_SENTINEL_PASSWORD, if set, overrides redis.sentinel.password: the password of\n" +
		"the sentinels themselves, when they require one.\n")
	b.WriteString("EXTPROC_IDENTITY_KEY, if set, is the identity key itself, in place of --identity-key-file.\n" +
		"Without either, per-user bucket keys hash identities without a secret, and an\n" +
		"identity such as a client IP can be recovered from a Redis key name.\n")
	io.WriteString(w, b.String())
}
