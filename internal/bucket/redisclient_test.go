package bucket

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcp-ratelimit/extproc/internal/bucket/redistest"
)

// writeCert writes a self-signed certificate and its key as PEM files.
func writeCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "redis.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IsCA:         true,
		DNSNames:     []string{"redis.test"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, block := range map[string]*pem.Block{
		certFile: {Type: "CERTIFICATE", Bytes: der},
		keyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

func TestNewRedisClientRejectsBadOptions(t *testing.T) {
	cert, key := writeCert(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts DialOptions
		want string // in the error
	}{
		{"nothing", DialOptions{}, "no URL, sentinel master or cluster addresses"},
		{"URL and cluster", DialOptions{URL: "redis://h:6379", Cluster: ClusterOptions{Addrs: []string{"h:7000"}}}, "exclusive"},
		{"sentinel without addresses", DialOptions{Sentinel: SentinelOptions{MasterName: "mymaster"}}, `sentinel master "mymaster" without sentinel addresses`},
		{"sentinel addresses without master", DialOptions{URL: "redis://h", Sentinel: SentinelOptions{Addrs: []string{"h:26379"}}}, "without a master name"},
		{"bad scheme", DialOptions{URL: "http://h:6379"}, "redis URL http://h:6379: "},
		{"password redacted", DialOptions{URL: "http://u:secret@h:6379"}, "http://u:xxxxx@h:6379"},
		{"password hidden in parse errors", DialOptions{URL: "redis://u:secret@h:po rt/0"}, `"redis://u:xxxxx@h:po rt/0": invalid port`},
		{"password hidden in escape errors", DialOptions{URL: "redis://u:sec%zzret@h:6379"}, "redis://u:xxxxx@h:6379"},
		{"password hidden without scheme", DialOptions{URL: "u:secret@h:6379"}, "u:xxxxx@h:6379"},
		{"bad db", DialOptions{URL: "redis://h:6379/x"}, "invalid database number"},
		{"TLS files with redis://", DialOptions{URL: "redis://h:6379", TLS: TLSOptions{CAFile: cert}}, "TLS options need a rediss:// URL"},
		{"missing CA file", DialOptions{URL: "rediss://h:6379", TLS: TLSOptions{CAFile: "/nonexistent/ca.pem"}}, "redis TLS CA file: open /nonexistent/ca.pem"},
		{"CA file without PEM", DialOptions{URL: "rediss://h:6379", TLS: TLSOptions{CAFile: garbage}}, "no PEM certificate found"},
		{"certificate without key", DialOptions{URL: "rediss://h:6379", TLS: TLSOptions{CertFile: cert}}, "without a key file"},
		{"key without certificate", DialOptions{URL: "rediss://h:6379", TLS: TLSOptions{KeyFile: key}}, "without a certificate file"},
		{"key that is not a key", DialOptions{URL: "rediss://h:6379", TLS: TLSOptions{CertFile: cert, KeyFile: garbage}}, "redis TLS client certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewRedisClient(tc.opts)
			if err == nil {
				c.Close()
				t.Fatalf("got no error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %q, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("got error %q, want the password hidden", err)
			}
		})
	}
}

func TestNewRedisClientBuildsTheRightClient(t *testing.T) {
	cert, key := writeCert(t)
	t.Run("URL with overrides", func(t *testing.T) {
		c := mustClient(t, DialOptions{URL: "redis://u:p@h:6380/3", Username: "admin", Password: "override", PoolSize: 7})
		o := c.(*redis.Client).Options()
		if o.Addr != "h:6380" || o.DB != 3 || o.Username != "admin" || o.Password != "override" || o.PoolSize != 7 || !o.ContextTimeoutEnabled || o.TLSConfig != nil {
			t.Errorf("got addr=%s db=%d user=%s password=%s pool=%d ctxTimeout=%v tls=%v, want h:6380 3 admin override 7 true nil",
				o.Addr, o.DB, o.Username, o.Password, o.PoolSize, o.ContextTimeoutEnabled, o.TLSConfig)
		}
	})
	t.Run("URL password kept without override", func(t *testing.T) {
		o := mustClient(t, DialOptions{URL: "redis://u:p@h:6380"}).(*redis.Client).Options()
		if o.Username != "u" || o.Password != "p" {
			t.Errorf("got user=%s password=%s, want u p", o.Username, o.Password)
		}
	})
	t.Run("rediss with files", func(t *testing.T) {
		o := mustClient(t, DialOptions{URL: "rediss://redis.test:6380", TLS: TLSOptions{CAFile: cert, CertFile: cert, KeyFile: key}}).(*redis.Client).Options()
		if o.TLSConfig == nil || o.TLSConfig.ServerName != "redis.test" || o.TLSConfig.RootCAs == nil || len(o.TLSConfig.Certificates) != 1 {
			t.Errorf("got TLS config %+v, want server name redis.test, roots and one client certificate", o.TLSConfig)
		}
	})
	t.Run("cluster", func(t *testing.T) {
		c := mustClient(t, DialOptions{Cluster: ClusterOptions{Addrs: []string{"a:7000", "b:7000"}}, TLS: TLSOptions{ServerName: "redis.test"}})
		cc, ok := c.(*redis.ClusterClient)
		if !ok {
			t.Fatalf("got %T, want *redis.ClusterClient", c)
		}
		if o := cc.Options(); len(o.Addrs) != 2 || o.TLSConfig == nil || !o.ContextTimeoutEnabled {
			t.Errorf("got addrs=%v tls=%v ctxTimeout=%v, want 2 addresses, TLS, context timeouts", o.Addrs, o.TLSConfig, o.ContextTimeoutEnabled)
		}
	})
	t.Run("sentinel", func(t *testing.T) {
		c := mustClient(t, DialOptions{Sentinel: SentinelOptions{MasterName: "mymaster", Addrs: []string{"s:26379"}}})
		if _, ok := c.(*redis.Client); !ok {
			t.Fatalf("got %T, want the failover *redis.Client", c)
		}
	})
}

func mustClient(t *testing.T, opts DialOptions) redis.UniversalClient {
	t.Helper()
	c, err := NewRedisClient(opts)
	if err != nil {
		t.Fatalf("NewRedisClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestPing(t *testing.T) {
	addr := redistest.Start(t)
	if err := Ping(context.Background(), mustClient(t, DialOptions{URL: "redis://" + addr})); err != nil {
		t.Errorf("got %v, want nil", err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close()
	err = Ping(context.Background(), mustClient(t, DialOptions{URL: "redis://" + down}))
	if want := "bucket: cannot reach redis at " + down; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want an error containing %q", err, want)
	}
}

func TestCheckScript(t *testing.T) {
	const user, password = "extproc", "s3cret"
	for _, tc := range []struct {
		name  string
		rules []string // ACL rules of user
		want  []string // in CheckScript's error; none for success
	}{
		{"the least an ACL user needs", minimalACL, nil},
		{"a user that may not SET, as Redis before 6.2 cannot SET PXAT", []string{"~mcprl:*", "+@all", "-set"},
			[]string{"cannot run the bucket script", "Redis 6.2 or later", "can't run this command"}},
		{"a user that may not run scripts", []string{"~mcprl:*", "+@all", "-evalsha", "-eval"},
			[]string{"cannot run the bucket script", "NOPERM"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.StartWithACL(t, user, password, tc.rules...)
			client := mustClient(t, DialOptions{URL: "redis://" + srv.Addr, Username: user, Password: password})
			err := CheckScript(context.Background(), client)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("got nil, want an error")
			}
			for _, w := range append(tc.want, srv.Addr) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestCheckScriptLeavesNoBucketBehind(t *testing.T) {
	srv := redistest.StartServer(t)
	client := mustClient(t, DialOptions{URL: "redis://" + srv.Addr})
	if err := CheckScript(context.Background(), client); err != nil {
		t.Fatal(err)
	}
	// The check's bucket refills in 1ms, so its key expires at the latest 2ms
	// after it was set (PXAT, whole milliseconds).
	ttl, err := srv.Client(t).PTTL(context.Background(), checkKey).Result()
	if err != nil {
		t.Fatal(err)
	}
	// go-redis gives PTTL's -1 (a key without expiry) and -2 (no key) as is.
	if ttl == -1 || ttl > 2*time.Millisecond {
		t.Errorf("PTTL %s: got %v, want at most 2ms (or gone)", checkKey, ttl)
	}
}
