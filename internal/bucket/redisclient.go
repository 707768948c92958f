package bucket

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DialOptions says how to reach Redis. Exactly one of URL, Sentinel and Cluster
// names the servers. Nothing here is read from the environment: callers resolve
// flags and variables (e.g. REDIS_PASSWORD into Password) before.
type DialOptions struct {
	// URL is redis://[user:pass@]host:port/db, or rediss://... for TLS.
	URL string
	// Username, when non-empty, overrides the URL's user.
	Username string
	// Password, when non-empty, overrides the URL's password.
	Password string
	// Sentinel, when MasterName is set, reaches the master of a Sentinel group.
	Sentinel SentinelOptions
	// Cluster, when Addrs is set, reaches a Redis Cluster.
	Cluster ClusterOptions
	// TLS configures TLS. It is used with a rediss:// URL, and with Sentinel or
	// Cluster when any of its fields is set; with a redis:// URL it is an error.
	TLS TLSOptions
	// PoolSize is the maximum number of connections per server; 0 means go-redis's
	// default of 10 per GOMAXPROCS.
	PoolSize int
	// DialTimeout bounds establishing a connection; 0 means go-redis's default (5s).
	DialTimeout time.Duration
}

// SentinelOptions names a Sentinel-managed master.
type SentinelOptions struct {
	MasterName string
	Addrs      []string // host:port of the sentinels
	// Username and Password authenticate to the sentinels themselves (their
	// requirepass, or an ACL user on them), which guard them apart from the
	// data servers; empty: the sentinels take no AUTH.
	Username, Password string
}

// ClusterOptions names a Redis Cluster.
type ClusterOptions struct {
	Addrs []string // host:port of some cluster nodes, used to discover the others
}

// TLSOptions configures TLS to Redis. Zero values mean the system roots, no
// client certificate, and the server name from the address.
type TLSOptions struct {
	CAFile   string // PEM roots to verify the server with, instead of the system's
	CertFile string // PEM client certificate; requires KeyFile
	KeyFile  string // PEM key of CertFile
	// ServerName overrides the name the server's certificate is checked against.
	ServerName string
	// InsecureSkipVerify disables verification of the server's certificate; for
	// tests only.
	InsecureSkipVerify bool
}

func (o TLSOptions) isSet() bool {
	return o != TLSOptions{}
}

// NewRedisClient builds the go-redis client DialOptions describe: a plain client
// for a URL, a failover client for Sentinel, a cluster client for Cluster. It does
// not connect; use Ping to check the server is reachable. Every client honours
// context deadlines on its socket reads and writes, so a decision's deadline
// bounds its round trip.
func NewRedisClient(opts DialOptions) (redis.UniversalClient, error) {
	modes := 0
	for _, set := range []bool{opts.URL != "", opts.Sentinel.MasterName != "", len(opts.Cluster.Addrs) > 0} {
		if set {
			modes++
		}
	}
	switch {
	case modes == 0:
		return nil, errors.New("bucket: redis: no URL, sentinel master or cluster addresses")
	case modes > 1:
		return nil, errors.New("bucket: redis: URL, sentinel and cluster are exclusive; set one")
	case opts.Sentinel.MasterName == "" && len(opts.Sentinel.Addrs) > 0:
		return nil, errors.New("bucket: redis: sentinel addresses without a master name")
	case opts.Sentinel.MasterName != "" && len(opts.Sentinel.Addrs) == 0:
		return nil, fmt.Errorf("bucket: redis: sentinel master %q without sentinel addresses", opts.Sentinel.MasterName)
	}

	var tlsConfig *tls.Config
	if opts.TLS.isSet() {
		var err error
		if tlsConfig, err = newTLSConfig(opts.TLS); err != nil {
			return nil, err
		}
	}

	switch {
	case opts.Sentinel.MasterName != "":
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:            opts.Sentinel.MasterName,
			SentinelAddrs:         opts.Sentinel.Addrs,
			SentinelUsername:      opts.Sentinel.Username,
			SentinelPassword:      opts.Sentinel.Password,
			Username:              opts.Username,
			Password:              opts.Password,
			TLSConfig:             tlsConfig,
			PoolSize:              opts.PoolSize,
			DialTimeout:           opts.DialTimeout,
			ContextTimeoutEnabled: true,
			MaxRetries:            noRetries,
		}), nil
	case len(opts.Cluster.Addrs) > 0:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                 opts.Cluster.Addrs,
			Username:              opts.Username,
			Password:              opts.Password,
			TLSConfig:             tlsConfig,
			PoolSize:              opts.PoolSize,
			DialTimeout:           opts.DialTimeout,
			ContextTimeoutEnabled: true,
			MaxRetries:            noRetries,
		}), nil
	}

	o, err := redis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("bucket: redis URL %s: %w", redactURL(opts.URL), redactURLError(opts.URL, err))
	}
	if o.TLSConfig == nil && tlsConfig != nil {
		return nil, fmt.Errorf("bucket: redis URL %s: TLS options need a rediss:// URL", redactURL(opts.URL))
	}
	if o.TLSConfig != nil && tlsConfig != nil {
		if tlsConfig.ServerName == "" {
			// ParseURL took the server name from the URL's host.
			tlsConfig.ServerName = o.TLSConfig.ServerName
		}
		o.TLSConfig = tlsConfig
	}
	if opts.Username != "" {
		o.Username = opts.Username
	}
	if opts.Password != "" {
		o.Password = opts.Password
	}
	if opts.PoolSize > 0 {
		o.PoolSize = opts.PoolSize
	}
	if opts.DialTimeout > 0 {
		o.DialTimeout = opts.DialTimeout
	}
	o.ContextTimeoutEnabled = true
	o.MaxRetries = noRetries
	return redis.NewClient(o), nil
}

// noRetries turns off go-redis's retries. It retries a command after a
// connection reset even when Redis may already have run it, and a script run
// twice charges a request twice. A failed decision instead follows failureMode,
// and the next one reconnects.
const noRetries = -1

func newTLSConfig(o TLSOptions) (*tls.Config, error) {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         o.ServerName,
		InsecureSkipVerify: o.InsecureSkipVerify, //nolint:gosec // opt-in, documented as test-only
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("bucket: redis TLS CA file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("bucket: redis TLS CA file %s: no PEM certificate found", o.CAFile)
		}
	}
	switch {
	case o.CertFile != "" && o.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("bucket: redis TLS client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	case o.CertFile != "":
		return nil, fmt.Errorf("bucket: redis TLS certificate %s without a key file", o.CertFile)
	case o.KeyFile != "":
		return nil, fmt.Errorf("bucket: redis TLS key %s without a certificate file", o.KeyFile)
	}
	return c, nil
}

// redactURL hides a URL's password so that errors can be logged.
func redactURL(raw string) string {
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return raw
	}
	start := 0
	if i := strings.Index(raw[:at], "://"); i >= 0 {
		start = i + len("://")
	}
	colon := strings.Index(raw[start:at], ":")
	if colon < 0 {
		return raw
	}
	return raw[:start+colon+1] + "xxxxx" + raw[at:]
}

// redactURLError returns err, from parsing raw, with raw's password hidden:
// url.Parse quotes the whole URL in its errors.
func redactURLError(raw string, err error) error {
	if ue, ok := err.(*url.Error); ok {
		redacted := *ue
		redacted.URL = redactURL(ue.URL)
		return &redacted
	}
	if redacted := redactURL(raw); redacted != raw {
		msg := err.Error()
		if pw := raw[strings.Index(redacted, "xxxxx"):strings.LastIndex(raw, "@")]; pw != "" && strings.Contains(msg, pw) {
			return errors.New(strings.ReplaceAll(msg, pw, "xxxxx"))
		}
	}
	return err
}

// Ping checks that client reaches Redis, with an error that says where it tried.
func Ping(ctx context.Context, client redis.UniversalClient) error {
	if err := client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("bucket: cannot reach redis at %s: %w", describe(client), err)
	}
	return nil
}

// checkKey is the bucket CheckScript charges: under the key prefix, so the ACL
// that lets the store work lets the check work, and without the "{server}" hash
// tag every bucket's key has, so it can never be one of them.
const checkKey = "mcprl:v1:startup-check"

// CheckScript runs the bucket script once, as a Take does, on a bucket of its own
// (one token a millisecond, expired within 2ms): a Redis that answers PING but
// cannot run it (older than 6.2, which lacks SET PXAT; an ACL without EVALSHA,
// EVAL, TIME, GET or SET) fails here rather than on every later decision, where
// the failure mode would hide it. A denial is a success: two replicas starting
// together may both check.
func CheckScript(ctx context.Context, client redis.UniversalClient) error {
	c := Charge{Key: checkKey, Limit: Limit{MaxTokens: 1, RefillPeriod: time.Millisecond}, Cost: 1}
	if _, err := NewRedis(client, RedisOptions{MaxBatch: 1}).Take(ctx, []Charge{c}); err != nil {
		return fmt.Errorf("bucket: redis at %s cannot run the bucket script (it needs Redis 6.2 or later, "+
			"and EVALSHA, EVAL, TIME, GET and SET on mcprl:* keys): %w", describe(client), err)
	}
	return nil
}

// failoverAddr is the address go-redis gives a failover client's options.
const failoverAddr = "FailoverClient"

// describe names the servers a client talks to, for error messages.
func describe(client redis.UniversalClient) string {
	switch c := client.(type) {
	case *redis.Client:
		if addr := c.Options().Addr; addr != failoverAddr {
			return addr
		}
		// A failover client does not expose its sentinels or master name.
		return "the master named by sentinels"
	case *redis.ClusterClient:
		return "cluster " + strings.Join(c.Options().Addrs, ",")
	}
	return fmt.Sprintf("%T", client)
}

// RouteRedisLogs sends go-redis's own log lines (reconnects, pool errors) to log
// at debug level instead of plain text on stderr, which would break JSON logs.
// Debug, because they repeat per request during an outage, which the limiter
// already reports once when the store goes down and once when it is back.
// go-redis keeps its logger in a package variable, so this is process-wide:
// call it once, from main.
func RouteRedisLogs(log *slog.Logger) {
	redis.SetLogger(redisLogger{log})
}

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}
