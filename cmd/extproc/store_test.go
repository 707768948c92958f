package main

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
)

func TestRedisDialOptionsPicksTheStore(t *testing.T) {
	tls := &config.TLS{CAFile: "/ca.pem"}
	tests := []struct {
		name   string
		opts   options
		policy config.Redis
		want   bucket.DialOptions
		wantOK bool
	}{
		{name: "nothing configured: memory"},
		{
			name:   "policy url with its credentials",
			policy: config.Redis{URL: "redis://r:6379/0", Username: "u", Password: "p"},
			want:   bucket.DialOptions{URL: "redis://r:6379/0", Username: "u", Password: "p"},
			wantOK: true,
		},
		{
			name:   "command-line url wins over the policy, without its credentials",
			opts:   options{redisURL: "redis://flag:6379"},
			policy: config.Redis{URL: "redis://r:6379/0", Password: "p", Sentinel: &config.Sentinel{MasterName: "m"}},
			want:   bucket.DialOptions{URL: "redis://flag:6379"},
			wantOK: true,
		},
		{
			name:   "policy sentinel wins over policy url",
			policy: config.Redis{URL: "redis://r:6379", Sentinel: &config.Sentinel{MasterName: "m", Addrs: []string{"s:26379"}}},
			want:   bucket.DialOptions{Sentinel: bucket.SentinelOptions{MasterName: "m", Addrs: []string{"s:26379"}}},
			wantOK: true,
		},
		{
			name:   "policy cluster with TLS",
			policy: config.Redis{Cluster: &config.Cluster{Addrs: []string{"c:6379"}}, TLS: tls},
			want:   bucket.DialOptions{Cluster: bucket.ClusterOptions{Addrs: []string{"c:6379"}}, TLS: bucket.TLSOptions{CAFile: "/ca.pem"}},
			wantOK: true,
		},
		{
			name:   "policy TLS applies to a rediss:// command-line url",
			opts:   options{redisURL: "rediss://flag:6380"},
			policy: config.Redis{TLS: tls},
			want:   bucket.DialOptions{URL: "rediss://flag:6380", TLS: bucket.TLSOptions{CAFile: "/ca.pem"}},
			wantOK: true,
		},
		{
			name:   "policy TLS does not apply to a redis:// command-line url",
			opts:   options{redisURL: "redis://flag:6379"},
			policy: config.Redis{TLS: tls},
			want:   bucket.DialOptions{URL: "redis://flag:6379"},
			wantOK: true,
		},
		{
			name:   "REDIS_PASSWORD overrides the policy password",
			opts:   options{redisPassword: "env"},
			policy: config.Redis{URL: "redis://r:6379", Password: "p"},
			want:   bucket.DialOptions{URL: "redis://r:6379", Password: "env"},
			wantOK: true,
		},
		{
			name: "policy sentinel with the sentinels' own credentials",
			policy: config.Redis{Password: "data", Sentinel: &config.Sentinel{MasterName: "m", Addrs: []string{"s:26379"},
				Username: "su", Password: "sp"}},
			want: bucket.DialOptions{Password: "data", Sentinel: bucket.SentinelOptions{MasterName: "m", Addrs: []string{"s:26379"},
				Username: "su", Password: "sp"}},
			wantOK: true,
		},
		{
			name: "REDIS_SENTINEL_PASSWORD overrides the sentinels' password only",
			opts: options{redisSentinelPassword: "env"},
			policy: config.Redis{Password: "data", Sentinel: &config.Sentinel{MasterName: "m", Addrs: []string{"s:26379"},
				Password: "sp"}},
			want: bucket.DialOptions{Password: "data", Sentinel: bucket.SentinelOptions{MasterName: "m", Addrs: []string{"s:26379"},
				Password: "env"}},
			wantOK: true,
		},
		{
			name:   "REDIS_SENTINEL_PASSWORD without a sentinel is not used",
			opts:   options{redisSentinelPassword: "env"},
			policy: config.Redis{URL: "redis://r:6379"},
			want:   bucket.DialOptions{URL: "redis://r:6379"},
			wantOK: true,
		},
		{
			name:   "REDIS_PASSWORD without any redis stays memory",
			opts:   options{redisPassword: "env"},
			wantOK: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := redisDialOptions(tt.opts, tt.policy)
			if ok != tt.wantOK {
				t.Fatalf("got ok %v, want %v", ok, tt.wantOK)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("dial options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDescribeRedisHidesThePassword(t *testing.T) {
	got := describeRedis(bucket.DialOptions{URL: "redis://u:hunter2@r:6379/0"})
	if want := "redis://u:xxxxx@r:6379/0"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRedactHidesEveryRedisPassword(t *testing.T) {
	d := bucket.DialOptions{
		URL:      "redis://u:url-pw@r:6379/0",
		Password: "data-pw",
		Sentinel: bucket.SentinelOptions{MasterName: "m", Addrs: []string{"s:26379"}, Password: "sentinel-pw"},
	}
	err := redact(errors.New("dial: url-pw data-pw sentinel-pw"), redisSecrets(d))
	if got, want := err.Error(), "dial: xxxxx xxxxx xxxxx"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestOpenStoreWarnsOfAPasswordItDoesNotUse(t *testing.T) {
	tests := []struct {
		name string
		opts options
		want []string // warnings, in order
	}{
		{name: "no password set", opts: options{}},
		{
			name: "REDIS_PASSWORD with the in-memory store",
			opts: options{redisPassword: "pw"},
			want: []string{"store: REDIS_PASSWORD is set but no Redis is configured; it is not used"},
		},
		{
			name: "REDIS_SENTINEL_PASSWORD with the in-memory store",
			opts: options{redisSentinelPassword: "pw"},
			want: []string{"store: REDIS_SENTINEL_PASSWORD is set but no redis.sentinel is in use; it is not used"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec warnRecorder
			st, err := openStore(context.Background(), tt.opts, config.Redis{}, slog.New(&rec))
			if err != nil {
				t.Fatalf("openStore: %v", err)
			}
			defer st.close()
			got := rec.msgs
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

// warnRecorder is a slog.Handler that keeps the messages of warnings.
type warnRecorder struct{ msgs []string }

func (r *warnRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *warnRecorder) Handle(_ context.Context, rec slog.Record) error {
	if rec.Level == slog.LevelWarn {
		r.msgs = append(r.msgs, rec.Message)
	}
	return nil
}
func (r *warnRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *warnRecorder) WithGroup(string) slog.Handler      { return r }
