package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
)

// This file holds every call into the bucket package's constructors and the Redis
// client, so that the wiring of the store lives in one place.

// pingTimeout bounds the start-up check of Redis: a misconfigured
// address fails fast, while outages later fail open per decision.
const pingTimeout = 5 * time.Second

// store is the bucket store the server charges, and how to release it.
type store struct {
	bucket.Store
	close func() error
}

// openStore picks the store (see redisDialOptions), logs which one, and for Redis
// checks within pingTimeout that it answers and can run the bucket script.
func openStore(ctx context.Context, o options, r config.Redis, log *slog.Logger) (store, error) {
	d, ok := redisDialOptions(o, r)
	if o.redisPassword != "" && !ok {
		log.Warn("store: REDIS_PASSWORD is set but no Redis is configured; it is not used")
	}
	if o.redisSentinelPassword != "" && d.Sentinel.MasterName == "" {
		log.Warn("store: REDIS_SENTINEL_PASSWORD is set but no redis.sentinel is in use; it is not used")
	}
	if !ok {
		log.Info("store: in memory; buckets are not shared between replicas")
		return store{Store: bucket.NewMemory(bucket.MemoryOptions{}), close: func() error { return nil }}, nil
	}
	where := describeRedis(d)
	secrets := redisSecrets(d)
	client, err := bucket.NewRedisClient(d)
	if err != nil {
		return store{}, redact(fmt.Errorf("redis at %s: %w", where, err), secrets)
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := bucket.Ping(pctx, client); err != nil {
		client.Close()
		return store{}, redact(fmt.Errorf("redis at %s failed the start-up PING (timeout %s): %w", where, pingTimeout, err), secrets)
	}
	if err := bucket.CheckScript(pctx, client); err != nil {
		client.Close()
		return store{}, redact(fmt.Errorf("redis at %s failed the start-up check: %w", where, err), secrets)
	}
	log.Info("store: redis", "redis", where)
	// The denial cache answers requests Redis is certain to deny without a round
	// trip, so a flood over the limit costs Redis little (issue 6).
	s := bucket.NewDenialCache(bucket.NewRedis(client, bucket.RedisOptions{}), bucket.DenialCacheOptions{})
	return store{Store: s, close: client.Close}, nil
}

// redisDialOptions says where the buckets live; ok is false for the in-memory
// store. --redis-url (REDIS_URL) wins over the policy's redis block, in which
// sentinel or cluster win over url. REDIS_PASSWORD overrides any other password
// of the data servers, REDIS_SENTINEL_PASSWORD the sentinels' own.
func redisDialOptions(o options, r config.Redis) (d bucket.DialOptions, ok bool) {
	switch {
	case o.redisURL != "":
		// The URL carries its own credentials; the policy's belong to its address.
		d.URL = o.redisURL
	case r.Sentinel != nil:
		d.Username, d.Password = r.Username, r.Password
		d.Sentinel = bucket.SentinelOptions{MasterName: r.Sentinel.MasterName, Addrs: r.Sentinel.Addrs,
			Username: r.Sentinel.Username, Password: r.Sentinel.Password}
		if pw := o.redisSentinelPassword; pw != "" {
			d.Sentinel.Password = pw
		}
	case r.Cluster != nil:
		d.Username, d.Password = r.Username, r.Password
		d.Cluster = bucket.ClusterOptions{Addrs: r.Cluster.Addrs}
	case r.URL != "":
		d.URL, d.Username, d.Password = r.URL, r.Username, r.Password
	default:
		return bucket.DialOptions{}, false
	}
	// The policy's TLS files apply to whatever Redis is used, except a redis://
	// URL from the command line: the operator asked for plain TCP there.
	if t := r.TLS; t != nil && !(o.redisURL != "" && !strings.HasPrefix(o.redisURL, "rediss://")) {
		d.TLS = bucket.TLSOptions{
			CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile,
			ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify,
		}
	}
	if pw := o.redisPassword; pw != "" {
		d.Password = pw
	}
	return d, true
}

// describeRedis names a Redis deployment for logs and errors, without password.
func describeRedis(d bucket.DialOptions) string {
	switch {
	case d.Sentinel.MasterName != "":
		return fmt.Sprintf("sentinel master %q via %s", d.Sentinel.MasterName, strings.Join(d.Sentinel.Addrs, ","))
	case len(d.Cluster.Addrs) > 0:
		return "cluster " + strings.Join(d.Cluster.Addrs, ",")
	default:
		return redactURL(d.URL)
	}
}

// redisSecrets lists the passwords an error message must never show.
func redisSecrets(d bucket.DialOptions) []string {
	var s []string
	for _, pw := range []string{d.Password, d.Sentinel.Password} {
		if pw != "" {
			s = append(s, pw)
		}
	}
	if u, err := url.Parse(d.URL); err == nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			s = append(s, pw, url.QueryEscape(pw), url.PathEscape(pw))
		}
	}
	return s
}

// redactedError is err with every secret in its message replaced, so that a
// client library's error quoting a URL cannot leak a password into the logs.
type redactedError struct {
	msg string
	err error
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.err }

func redact(err error, secrets []string) error {
	msg := err.Error()
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	if msg == err.Error() {
		return err
	}
	return redactedError{msg, err}
}
