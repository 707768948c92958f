package bucket

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcp-ratelimit/extproc/internal/bucket/redistest"
)

// These tests run the store through NewRedisClient against real servers of every
// topology the command line supports: TLS, an ACL user, Cluster, Sentinel, and a server
// that restarts.

// minimalACL is the least an ACL user needs for the Redis store, as operators
// should be told: PING for the start-up check; EVALSHA and EVAL (the fallback
// when Redis lost its script cache) to run gcra.lua; TIME, GET and SET, which
// the script calls and Redis checks against the caller's ACL; keys under mcprl:
// only. A cluster client also needs COMMAND (go-redis reads the command table
// once) and CLUSTER SLOTS (the slot map); ASKING follows a slot being migrated.
var minimalACL = []string{
	"resetkeys", "~mcprl:*", "resetchannels", "-@all",
	"+ping", "+evalsha", "+eval", "+time", "+get", "+set",
	"+command", "+cluster|slots", "+asking",
}

// dialTimeout bounds every test's dials and decisions, so that a broken server
// fails the test instead of hanging it.
const dialTimeout = 5 * time.Second

// fourCharges are the buckets of one tools/call by a user: every scope that
// policy rules combine, with 5 tokens per hour each.
func fourCharges(server string) []Charge {
	l := lim(5, hour)
	return []Charge{
		{Key: unsalted.Key(server, ScopeShared, "", ""), Limit: l, Cost: 1},
		{Key: unsalted.Key(server, ScopeTool, "search", ""), Limit: l, Cost: 1},
		{Key: unsalted.Key(server, ScopeUser, "", "alice"), Limit: l, Cost: 1},
		{Key: unsalted.Key(server, ScopeUserTool, "search", "alice"), Limit: l, Cost: 1},
	}
}

func dial(t *testing.T, opts DialOptions) redis.UniversalClient {
	t.Helper()
	opts.DialTimeout = dialTimeout
	return mustClient(t, opts)
}

// wantDecides runs one Take of charges through client and checks it is allowed
// with remaining tokens left in each bucket.
func wantDecides(t *testing.T, client redis.UniversalClient, charges []Charge, remaining int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	res, err := NewRedis(client, RedisOptions{}).Take(ctx, charges)
	if err != nil {
		t.Fatalf("Take: got error %v, want a decision", err)
	}
	want := make([]int64, len(charges))
	for i := range want {
		want[i] = remaining
	}
	wantAllowed(t, res, want...)
}

// pingErr is Ping's error, within dialTimeout.
func pingErr(client redis.UniversalClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	return Ping(ctx, client)
}

func TestRedisOverTLS(t *testing.T) {
	plain := redistest.StartTLS(t, false)
	mutual := redistest.StartTLS(t, true)
	otherCA, _ := writeCert(t)
	for _, tc := range []struct {
		name string
		url  string
		tls  TLSOptions
		want string // in Ping's error; "" for success
	}{
		{"custom CA", "rediss://" + plain.Addr, TLSOptions{CAFile: plain.CAFile}, ""},
		{"server name override", "rediss://" + plain.Addr, TLSOptions{CAFile: plain.CAFile, ServerName: "localhost"}, ""},
		{"client certificate", "rediss://" + mutual.Addr, TLSOptions{CAFile: mutual.CAFile, CertFile: mutual.CertFile, KeyFile: mutual.KeyFile}, ""},
		{"wrong CA", "rediss://" + plain.Addr, TLSOptions{CAFile: otherCA}, "certificate signed by unknown authority"},
		{"system roots", "rediss://" + plain.Addr, TLSOptions{}, "certificate signed by unknown authority"},
		{"wrong server name", "rediss://" + plain.Addr, TLSOptions{CAFile: plain.CAFile, ServerName: "redis.example"}, "not redis.example"},
		{"no client certificate", "rediss://" + mutual.Addr, TLSOptions{CAFile: mutual.CAFile}, "certificate required"},
		{"plain TCP to a TLS port", "redis://" + plain.Addr, TLSOptions{}, "cannot reach redis"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := dial(t, DialOptions{URL: tc.url, TLS: tc.tls})
			err := pingErr(client)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "127.0.0.1:") {
					t.Fatalf("Ping: got error %v, want one naming the server and containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Ping: got error %v, want nil", err)
			}
			wantDecides(t, client, fourCharges(strings.ReplaceAll(t.Name(), "/", ".")), 4)
		})
	}
}

func TestRedisWithACLUser(t *testing.T) {
	const user, password = "extproc", "s3cret"
	srv := redistest.StartWithACL(t, user, password, minimalACL...)
	admin := srv.Client(t)
	for _, tc := range []struct {
		name string
		opts DialOptions
		want string // in Ping's error; "" for success
	}{
		{"username and password", DialOptions{URL: "redis://" + srv.Addr, Username: user, Password: password}, ""},
		{"credentials in the URL", DialOptions{URL: "redis://" + user + ":" + password + "@" + srv.Addr}, ""},
		{"password overrides the URL's", DialOptions{URL: "redis://" + user + ":stale@" + srv.Addr, Password: password}, ""},
		{"username overrides the URL's", DialOptions{URL: "redis://someone:" + password + "@" + srv.Addr, Username: user}, ""},
		{"wrong password", DialOptions{URL: "redis://" + srv.Addr, Username: user, Password: "wrong"}, "WRONGPASS"},
		{"URL's wrong password", DialOptions{URL: "redis://" + user + ":wrong@" + srv.Addr}, "WRONGPASS"},
		{"no credentials", DialOptions{URL: "redis://" + srv.Addr}, "NOAUTH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := dial(t, tc.opts)
			err := pingErr(client)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), srv.Addr) {
					t.Fatalf("Ping: got error %v, want one naming %s and containing %q", err, srv.Addr, tc.want)
				}
				if strings.Contains(err.Error(), "wrong") || strings.Contains(err.Error(), password) {
					t.Errorf("Ping: got error %q, want no password in it", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Ping: got error %v, want nil", err)
			}
			charges := fourCharges(strings.ReplaceAll(t.Name(), "/", "."))
			wantDecides(t, client, charges, 4)
			// The EVAL fallback must be allowed too.
			if err := admin.ScriptFlush(context.Background()).Err(); err != nil {
				t.Fatalf("SCRIPT FLUSH: %v", err)
			}
			wantDecides(t, client, charges, 3)
		})
	}
	wantNoACLDenials(t, admin, user)
}

// wantNoACLDenials checks the ACL log of the server behind admin has no denial
// to user other than failed logins. Denials the client survives (go-redis
// falling back when COMMAND is refused, say) show there though no call failed.
func wantNoACLDenials(t *testing.T, admin *redis.Client, user string) {
	t.Helper()
	entries, err := admin.ACLLog(context.Background(), 10).Result()
	if err != nil {
		t.Errorf("ACL LOG: %v", err)
		return
	}
	for _, e := range entries {
		if e.Username == user && e.Reason != "auth" {
			t.Errorf("ACL LOG of %s: got %s denied %s %q, want no denial with the minimal ACL", admin.Options().Addr, e.Username, e.Reason, e.Object)
		}
	}
}

func TestRedisCluster(t *testing.T) {
	const user, password = "extproc", "s3cret"
	cl := redistest.StartCluster(t, 3)
	for _, m := range cl.Masters {
		args := []any{"ACL", "SETUSER", user, "reset", "on", ">" + password}
		for _, r := range minimalACL {
			args = append(args, r)
		}
		if err := m.Client(t).Do(context.Background(), args...).Err(); err != nil {
			t.Fatalf("ACL SETUSER on %s: %v", m.Addr, err)
		}
	}
	// The store runs as the ACL user; the test inspects as the default user.
	client := dial(t, DialOptions{Cluster: ClusterOptions{Addrs: cl.Addrs()}, Username: user, Password: password})
	admin := dial(t, DialOptions{Cluster: ClusterOptions{Addrs: cl.Addrs()}}).(*redis.ClusterClient)
	if err := pingErr(client); err != nil {
		t.Fatalf("Ping: got error %v, want nil", err)
	}

	// One server name per master, so that requests land on every node.
	servers := make([]string, len(cl.Masters))
	for i, found := 0, 0; found < len(servers); i++ {
		name := "cluster-" + strconv.Itoa(i)
		slot, err := admin.ClusterKeySlot(context.Background(), unsalted.Key(name, ScopeShared, "", "")).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT: %v", err)
		}
		// StartCluster splits the slots evenly, in the order of Masters.
		if m := int(slot) * len(cl.Masters) / 16384; servers[m] == "" {
			servers[m] = name
			found++
		}
	}

	t.Run("all keys of a request in one slot", func(t *testing.T) {
		for i, server := range servers {
			charges := fourCharges(server)
			wantDecides(t, client, charges, 4)
			keys := make([]string, len(charges))
			for j, c := range charges {
				keys[j] = c.Key
			}
			// Asked directly, the master must hold all four: no MOVED, no CROSSSLOT.
			n, err := cl.Masters[i].Client(t).Exists(context.Background(), keys...).Result()
			if err != nil || n != int64(len(keys)) {
				t.Errorf("server %s: EXISTS on master %s: got %d, %v, want %d keys", server, cl.Masters[i].Addr, n, err, len(keys))
			}
		}
	})

	t.Run("keeps deciding after SCRIPT FLUSH on every node", func(t *testing.T) {
		for _, server := range servers {
			wantDecides(t, client, fourCharges(server+"-flush"), 4)
		}
		err := admin.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
			return m.ScriptFlush(ctx).Err()
		})
		if err != nil {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
		for _, server := range servers {
			wantDecides(t, client, fourCharges(server+"-flush"), 3)
		}
	})

	t.Run("concurrent takes after SCRIPT FLUSH on every node", func(t *testing.T) {
		// Takes that arrive together share pipelines, which span nodes and must
		// each recover from NOSCRIPT.
		store := NewRedis(client, RedisOptions{})
		const callers = 32
		charges := make([][]Charge, callers)
		for i := range charges {
			charges[i] = fourCharges(fmt.Sprintf("%s-burst-%d", servers[i%len(servers)], i))
			wantDecides(t, client, charges[i], 4)
		}
		err := admin.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
			return m.ScriptFlush(ctx).Err()
		})
		if err != nil {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
		errs := make(chan error, callers)
		var wg sync.WaitGroup
		for _, c := range charges {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
				defer cancel()
				res, err := store.Take(ctx, c)
				switch {
				case err != nil:
					errs <- err
				case !res.Allowed || res.Buckets[0].Remaining != 3:
					errs <- fmt.Errorf("%s: got %+v, want allowed with 3 remaining", c[0].Key, res)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("Take: %v", err)
		}
	})

	t.Run("conformance", func(t *testing.T) {
		runConformance(t, func(t *testing.T) harness {
			h := redisHarness(admin)
			h.store = NewRedis(client, RedisOptions{})
			return h
		})
	})

	for _, m := range cl.Masters {
		wantNoACLDenials(t, m.Client(t), user)
	}
}

func TestRedisSentinel(t *testing.T) {
	s := redistest.StartSentinel(t)
	client := dial(t, DialOptions{Sentinel: SentinelOptions{MasterName: s.MasterName, Addrs: s.Addrs()}})
	if err := pingErr(client); err != nil {
		t.Fatalf("Ping: got error %v, want nil", err)
	}
	charges := fourCharges("sentinel")
	wantDecides(t, client, charges, 4)

	// The replica must hold the buckets before it is promoted, or the failover
	// would lose them: replication is asynchronous. (WAIT would do, but waits for
	// the replica's next acknowledgement, up to a second.)
	replica := s.Replica.Client(t)
	keys := make([]string, len(charges))
	for i, c := range charges {
		keys[i] = c.Key
	}
	for deadline := time.Now().Add(dialTimeout); ; {
		n, err := replica.Exists(context.Background(), keys...).Result()
		if err == nil && n == int64(len(keys)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("EXISTS on the replica %s: got %d, %v, want %d keys replicated", s.Replica.Addr, n, err, len(keys))
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
	}
	s.Failover(t)
	// The failover client finds the new master; the buckets moved with it.
	wantDecides(t, client, charges, 3)
	if n, err := s.Master.Client(t).Exists(context.Background(), charges[0].Key).Result(); err != nil || n != 1 {
		t.Errorf("EXISTS on the new master %s: got %d, %v, want 1", s.Master.Addr, n, err)
	}
}

func TestRedisSentinelThatRequiresAPassword(t *testing.T) {
	const password = "sentinel-s3cret"
	s := redistest.StartSentinelWithPassword(t, password)

	t.Run("with the sentinels' password, decides", func(t *testing.T) {
		client := dial(t, DialOptions{Sentinel: SentinelOptions{MasterName: s.MasterName, Addrs: s.Addrs(), Password: password}})
		if err := pingErr(client); err != nil {
			t.Fatalf("Ping: got error %v, want nil", err)
		}
		wantDecides(t, client, fourCharges("sentinel-auth"), 4)
	})
	t.Run("without it, Ping fails naming the cause", func(t *testing.T) {
		client := dial(t, DialOptions{Sentinel: SentinelOptions{MasterName: s.MasterName, Addrs: s.Addrs()}})
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		if err := Ping(ctx, client); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
			t.Fatalf("Ping: got error %v, want one containing NOAUTH", err)
		}
	})
}

func TestRedisKeepsDecidingAcrossARestart(t *testing.T) {
	srv := redistest.StartServer(t)
	client := dial(t, DialOptions{URL: "redis://" + srv.Addr})
	charges := fourCharges("restart")
	wantDecides(t, client, charges, 4)
	wantDecides(t, client, charges, 3)

	srv.Stop(t)
	// go-redis retries dials for seconds; a decision's deadline cuts that short.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if res, err := NewRedis(client, RedisOptions{}).Take(ctx, charges); err == nil || errors.Is(err, ErrInvalidCharge) {
		t.Fatalf("Take with Redis down: got %+v, %v, want a store error", res, err)
	}

	// No persistence: Redis comes back without the script (NOSCRIPT, then EVAL)
	// and without the buckets, which are full again.
	srv.Restart(t)
	wantDecides(t, client, charges, 4)
	wantDecides(t, client, charges, 3)
	if got, err := srv.Client(t).ScriptExists(context.Background(), NewRedis(client, RedisOptions{}).script.Hash()).Result(); err != nil || !slices.Equal(got, []bool{true}) {
		t.Errorf("SCRIPT EXISTS: got %v, %v, want the script loaded again", got, err)
	}
}

// TestRedisClientNamesWhereItFailed checks the error of Ping for each topology
// names the servers it tried.
func TestRedisClientNamesWhereItFailed(t *testing.T) {
	down := closedAddr(t)
	for _, tc := range []struct {
		name string
		opts DialOptions
		want string
	}{
		{"single", DialOptions{URL: "redis://" + down}, "cannot reach redis at " + down},
		{"cluster", DialOptions{Cluster: ClusterOptions{Addrs: []string{down}}}, "cannot reach redis at cluster " + down},
		{"sentinel", DialOptions{Sentinel: SentinelOptions{MasterName: "mymaster", Addrs: []string{down}}}, "cannot reach redis at the master named by sentinels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// go-redis retries dials (and sentinels) until the deadline: keep it short.
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			if err := Ping(ctx, dial(t, tc.opts)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Ping: got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// closedAddr is a loopback address on which nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
