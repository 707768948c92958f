package redistest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// Cluster is a Redis Cluster of masters without replicas.
type Cluster struct {
	// Masters are the nodes, in the order of the slot ranges they serve: the
	// first serves slots from 0, the last up to 16383.
	Masters []*Server
}

// Addrs are the masters' addresses, to give a cluster client.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Masters))
	for i, m := range c.Masters {
		addrs[i] = m.Addr
	}
	return addrs
}

// StartCluster starts a Redis Cluster of n masters (3 is the smallest that Redis
// deems healthy) on free loopback ports, the slots split evenly between them, and
// returns once every node reports the cluster state ok. The cluster is formed
// with CLUSTER ADDSLOTSRANGE and CLUSTER MEET, so redis-cli is not needed.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("redistest: a cluster of %d masters", n)
	}
	c := &Cluster{}
	busPorts := make([]string, n)
	for i := range n {
		busPort, err := freePort()
		if err != nil {
			tb.Fatalf("redistest: find a free port: %v", err)
		}
		busPorts[i] = strconv.Itoa(busPort)
		dir := tb.TempDir()
		c.Masters = append(c.Masters, startServer(tb, serverConfig{
			args: []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", dir + "/nodes.conf",
				// The bus port is free when probed, like the client port;
				// without it Redis would use port+10000, never probed.
				"--cluster-port", strconv.Itoa(busPort),
				"--cluster-node-timeout", "5000",
			},
			name: fmt.Sprintf("node%d", i),
		}))
	}

	ctx := context.Background()
	clients := make([]*redis.Client, n)
	for i, m := range c.Masters {
		clients[i] = m.Client(tb)
		lo, hi := i*clusterSlots/n, (i+1)*clusterSlots/n-1
		if err := clients[i].ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
			tb.Fatalf("redistest: CLUSTER ADDSLOTSRANGE %d %d on %s: %v", lo, hi, m.Addr, err)
		}
	}
	// Every pair meets directly, so that no node waits for gossip to learn of
	// another.
	for i := range c.Masters {
		for j, m := range c.Masters[i+1:] {
			host, port, _ := strings.Cut(m.Addr, ":")
			// Without the bus port, MEET would assume port+10000.
			if err := clients[i].Do(ctx, "CLUSTER", "MEET", host, port, busPorts[i+1+j]).Err(); err != nil {
				tb.Fatalf("redistest: CLUSTER MEET %s from %s: %v", m.Addr, c.Masters[i].Addr, err)
			}
		}
	}
	want := fmt.Sprintf("cluster_known_nodes:%d", n)
	for i, cl := range clients {
		err := poll(func() error {
			info, err := cl.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, want) {
				return fmt.Errorf("CLUSTER INFO: got %q, want cluster_state:ok and %s", info, want)
			}
			return nil
		})
		if err != nil {
			tb.Fatalf("redistest: cluster node %s: %v", c.Masters[i].Addr, err)
		}
	}
	return c
}

// poll calls f until it succeeds or readyTimeout passes, returning its last error.
func poll(f func() error) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %w", readyTimeout, err)
		}
		time.Sleep(pollInterval)
	}
}
