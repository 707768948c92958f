package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/bucket/redistest"
	"github.com/mcp-ratelimit/extproc/internal/config"
)

// TestOpenStoreReachesEveryTopology follows a policy's redis block (and the
// command line) through openStore to real servers of every topology, and
// charges a bucket there. internal/bucket tests the topologies in depth; this
// checks the wiring: field names, TLS files, credentials, REDIS_PASSWORD and
// REDIS_SENTINEL_PASSWORD.
func TestOpenStoreReachesEveryTopology(t *testing.T) {
	const user, password = "extproc", "s3cret"
	tlsSrv := redistest.StartTLS(t, true)
	aclSrv := redistest.StartWithACL(t, user, password, "~mcprl:*", "+@all")
	// Answers PING but cannot run the bucket script, as a Redis older than 6.2
	// (no SET PXAT) cannot either.
	noSetSrv := redistest.StartWithACL(t, user, password, "~mcprl:*", "+@all", "-set")
	sentinel := redistest.StartSentinel(t)
	const sentinelPassword = "sentinel-s3cret"
	authSentinel := redistest.StartSentinelWithPassword(t, sentinelPassword)
	authSentinelBlock := "  sentinel:\n    masterName: " + authSentinel.MasterName + "\n    addrs: [" + strings.Join(authSentinel.Addrs(), ", ") + "]\n"
	cluster := redistest.StartCluster(t, 3)
	tlsBlock := "  tls: {caFile: " + tlsSrv.CAFile + ", certFile: " + tlsSrv.CertFile + ", keyFile: " + tlsSrv.KeyFile + "}\n"

	for _, tc := range []struct {
		name  string
		opts  options
		redis string // the policy's redis block
		want  string // in openStore's error; "" for success
	}{
		{
			name:  "rediss URL with a CA and a client certificate",
			redis: "  url: rediss://" + tlsSrv.Addr + "\n" + tlsBlock,
		},
		{
			name:  "command-line rediss URL with the policy's TLS files",
			opts:  options{redisURL: "rediss://" + tlsSrv.Addr},
			redis: tlsBlock,
		},
		{
			name:  "policy's TLS files without the client certificate",
			redis: "  url: rediss://" + tlsSrv.Addr + "\n  tls: {caFile: " + tlsSrv.CAFile + "}\n",
			want:  "certificate required",
		},
		{
			name:  "ACL user with REDIS_PASSWORD overriding the policy's",
			opts:  options{redisPassword: password},
			redis: "  url: redis://" + aclSrv.Addr + "\n  username: " + user + "\n  password: stale\n",
		},
		{
			name:  "ACL user with a wrong password",
			redis: "  url: redis://" + aclSrv.Addr + "\n  username: " + user + "\n  password: stale\n",
			want:  "WRONGPASS",
		},
		{
			name:  "Redis that answers PING but cannot run the bucket script",
			opts:  options{redisPassword: password},
			redis: "  url: redis://" + noSetSrv.Addr + "\n  username: " + user + "\n",
			want:  "failed the start-up check",
		},
		{
			name:  "sentinel",
			redis: "  sentinel:\n    masterName: " + sentinel.MasterName + "\n    addrs: [" + strings.Join(sentinel.Addrs(), ", ") + "]\n",
		},
		{
			name:  "sentinels that require a password, given by REDIS_SENTINEL_PASSWORD",
			opts:  options{redisSentinelPassword: sentinelPassword},
			redis: authSentinelBlock + "    password: stale\n",
		},
		{
			name:  "sentinels that require a password, given none",
			redis: authSentinelBlock,
			want:  "NOAUTH",
		},
		{
			name:  "cluster",
			redis: "  cluster:\n    addrs: [" + strings.Join(cluster.Addrs(), ", ") + "]\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			policy, err := config.Parse([]byte(strings.TrimLeft(validPolicy, "\n") + "redis:\n" + tc.redis))
			if err != nil {
				t.Fatalf("policy: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := openStore(ctx, tc.opts, policy.Redis, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if tc.want != "" {
				if err == nil {
					st.close()
					t.Fatalf("openStore: got no error, want one containing %q", tc.want)
				}
				if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "stale") {
					t.Fatalf("openStore: got error %q, want one containing %q without the password", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("openStore: got error %v, want a store", err)
			}
			defer st.close()
			c := bucket.Charge{
				Key:   (*bucket.Keys)(nil).Key(strings.ReplaceAll(t.Name(), "/", "."), bucket.ScopeShared, "", ""),
				Limit: bucket.Limit{MaxTokens: 2, RefillPeriod: time.Hour},
				Cost:  1,
			}
			res, err := st.Take(ctx, []bucket.Charge{c})
			if err != nil || !res.Allowed || len(res.Buckets) != 1 || res.Buckets[0].Remaining != 1 {
				t.Fatalf("Take: got %+v, %v, want allowed with 1 token left", res, err)
			}
		})
	}
}
