package harness

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
)

// Redis is a redis-server on a free loopback port, without persistence: a local
// process, or a container when a Docker engine is reachable.
type Redis struct {
	svc  service
	Addr string // 127.0.0.1:port, the same across Stop and Restart
}

// URL is the --redis-url for extproc.
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// StartRedis starts Redis and waits until it answers PING.
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	r := &Redis{Addr: Addr(FreePort(tb))}
	if docker, _ := useDocker(); docker {
		r.svc = startRedisContainer(tb, r.Addr)
	} else {
		bin := RedisTool.Require(tb)
		_, port, _ := net.SplitHostPort(r.Addr)
		r.svc = startProcess(tb, "redis-server", bin,
			"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", tb.TempDir(), "--loglevel", "warning")
	}
	if err := r.waitReady(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return r
}

// Stop stops Redis (SIGTERM); its data is gone.
func (r *Redis) Stop() error { return r.svc.Stop() }

// Restart starts Redis again on the same port, empty, and waits for PING.
func (r *Redis) Restart(ctx context.Context) error {
	if err := r.svc.Start(); err != nil {
		return err
	}
	return r.waitReady(ctx)
}

func (r *Redis) waitReady(ctx context.Context) error {
	return WaitFor(ctx, "redis", r.svc, func(ctx context.Context) error { return Ping(ctx, r.Addr) })
}

// Ping sends one inline PING and expects +PONG.
func Ping(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	if got := strings.TrimSpace(line); got != "+PONG" {
		return fmt.Errorf("redis ping: got %q, want +PONG", got)
	}
	return nil
}
