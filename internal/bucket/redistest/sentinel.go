package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/redis/go-redis/v9"
)

// SentinelMasterName is the name under which StartSentinel's sentinels monitor
// the master.
const SentinelMasterName = "mymaster"

// Sentinel is a master with one replica, watched by sentinels.
type Sentinel struct {
	// MasterName is the name the sentinels know the master by.
	MasterName string
	// Master and Replica are the data servers as started; after Failover their
	// roles are swapped.
	Master, Replica *Server
	// Sentinels are the sentinel processes.
	Sentinels []*Server
	// Password is the sentinels' requirepass; empty when they take no AUTH.
	Password string
}

// Addrs are the sentinels' addresses, to give a failover client.
func (s *Sentinel) Addrs() []string {
	addrs := make([]string, len(s.Sentinels))
	for i, x := range s.Sentinels {
		addrs[i] = x.Addr
	}
	return addrs
}

// StartSentinel starts a master, a replica of it, and two sentinels monitoring
// them under SentinelMasterName, and returns once both sentinels know the master
// and see the replica linked to it, so that Failover can promote it.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	return StartSentinelWithPassword(tb, "")
}

// StartSentinelWithPassword is StartSentinel with sentinels that require
// password (requirepass, and sentinel-pass for talking to each other), as
// Helm charts set them up when sentinel authentication is on. The data servers
// take no password. An empty password starts sentinels without one.
func StartSentinelWithPassword(tb testing.TB, password string) *Sentinel {
	tb.Helper()
	// Diskless replication waits 5s by default for more replicas to sync at once.
	master := StartServer(tb, "--repl-diskless-sync-delay", "0")
	mhost, mport, _ := net.SplitHostPort(master.Addr)
	replica := StartServer(tb, "--replicaof", mhost, mport)
	s := &Sentinel{MasterName: SentinelMasterName, Master: master, Replica: replica, Password: password}
	for i := range 2 {
		// Sentinel rewrites its configuration file, so it needs one of its own.
		dir := tb.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		content := fmt.Sprintf("sentinel monitor %[1]s %[2]s %[3]s 1\n"+
			"sentinel down-after-milliseconds %[1]s 1000\n"+
			"sentinel failover-timeout %[1]s 10000\n", SentinelMasterName, mhost, mport)
		if password != "" {
			content += fmt.Sprintf("requirepass %[1]q\nsentinel sentinel-pass %[1]q\n", password)
		}
		if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		s.Sentinels = append(s.Sentinels, startServer(tb, serverConfig{
			// The configuration file must come first; --sentinel switches the
			// server to sentinel mode.
			args:  []string{"--sentinel"},
			conf:  conf,
			name:  fmt.Sprintf("sentinel%d", i),
			probe: probe{password: password},
		}))
	}
	for _, x := range s.Sentinels {
		if err := s.waitReplicaKnown(tb, x, replica.Addr); err != nil {
			tb.Fatalf("redistest: sentinel %s: %v", x.Addr, err)
		}
	}
	return s
}

// waitReplicaKnown polls x until it sees addr as a healthy replica of the master.
func (s *Sentinel) waitReplicaKnown(tb testing.TB, x *Server, addr string) error {
	tb.Helper()
	sc := s.sentinelClient(x.Addr)
	defer sc.Close()
	ctx := context.Background()
	return poll(func() error {
		replicas, err := sc.Replicas(ctx, s.MasterName).Result()
		if err != nil {
			return err
		}
		for _, r := range replicas {
			if net.JoinHostPort(r["ip"], r["port"]) == addr && r["flags"] == "slave" && r["master-link-status"] == "ok" {
				return nil
			}
		}
		return fmt.Errorf("SENTINEL REPLICAS %s: got %v, want %s linked", s.MasterName, replicas, addr)
	})
}

// Failover makes the sentinels promote the replica (SENTINEL FAILOVER, which
// needs no quorum) and returns once every sentinel names it as the master and
// it answers as one. The old master becomes its replica.
func (s *Sentinel) Failover(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	sc := s.sentinelClient(s.Sentinels[0].Addr)
	defer sc.Close()
	if err := sc.Failover(ctx, s.MasterName).Err(); err != nil {
		tb.Fatalf("redistest: SENTINEL FAILOVER %s: %v", s.MasterName, err)
	}
	promoted := s.Replica
	for _, x := range s.Sentinels {
		xc := s.sentinelClient(x.Addr)
		err := poll(func() error {
			addr, err := xc.GetMasterAddrByName(ctx, s.MasterName).Result()
			if err != nil {
				return err
			}
			if len(addr) != 2 || net.JoinHostPort(addr[0], addr[1]) != promoted.Addr {
				return fmt.Errorf("SENTINEL GET-MASTER-ADDR-BY-NAME: got %v, want %s", addr, promoted.Addr)
			}
			return nil
		})
		xc.Close()
		if err != nil {
			tb.Fatalf("redistest: sentinel %s after failover: %v", x.Addr, err)
		}
	}
	pc := promoted.Client(tb)
	err := poll(func() error {
		role, err := pc.Do(ctx, "ROLE").Slice()
		if err != nil {
			return err
		}
		if len(role) == 0 || role[0] != "master" {
			return fmt.Errorf("ROLE: got %v, want master", role)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("redistest: promoted replica %s: %v", promoted.Addr, err)
	}
	s.Master, s.Replica = promoted, s.Master
}

// sentinelClient talks to the sentinel at addr, with the sentinels' password.
func (s *Sentinel) sentinelClient(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: addr, Password: s.Password, MaxRetries: -1, DisableIdentity: true})
}
