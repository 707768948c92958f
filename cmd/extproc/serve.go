package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
	"github.com/mcp-ratelimit/extproc/internal/limiter"
	"github.com/mcp-ratelimit/extproc/internal/metrics"
	"github.com/mcp-ratelimit/extproc/internal/processor"
	"github.com/mcp-ratelimit/extproc/internal/tlsreload"
)

// extProcService is the gRPC service name whose health Envoy and Kubernetes ask for.
var extProcService = extprocv3.ExternalProcessor_ServiceDesc.ServiceName

// adminShutdownTimeout bounds the admin server's shutdown, after the gRPC drain:
// its requests (probes, scrapes) are short.
const adminShutdownTimeout = 2 * time.Second

// serve runs the processor until ctx is done, then shuts down gracefully. It
// returns nil after a shutdown asked for through ctx, or the error of a server
// that failed.
//
// It starts, in order: the policy, identity key and TLS files (so a bad one
// fails the start before anything listens), the admin server (so probes see
// "alive, not ready" while the store is checked), the store, the gRPC server,
// the watchers of the policy and TLS files; then it reports ready. Shutdown
// (shutdown) undoes it in the opposite order.
func serve(ctx context.Context, o options, log *slog.Logger) error {
	// Caught from the start: Go's default for SIGHUP ends the process, which a
	// reload signal must never do (it waits in the channel until the watcher
	// starts; without --config there is nothing to reload and it is dropped).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	in, err := readInputs(o, log)
	if err != nil {
		return err
	}
	errc := make(chan error, 3)
	adm, err := startAdmin(ctx, o, in.registry, errc, log)
	if err != nil {
		return err
	}
	defer adm.stop() // on the early returns below; shutdown calls it in order

	st, err := openStore(ctx, o, in.policy.Redis, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.close(); err != nil {
			log.Warn("closing the store", "error", err)
		}
	}()

	lim := limiter.New(in.policy, limiter.Options{Store: st.Store, Logger: log, Keys: in.keys})
	m := metrics.New(in.registry)
	proc := processor.New(lim, processor.Options{Logger: log, Observer: m})
	g, err := startGRPC(o, proc, in.tls, errc, log)
	if err != nil {
		return err
	}
	stopWatchers := startWatchers(ctx, o, in, hup, lim, m, log)
	defer stopWatchers()

	// The policy is loaded, the store answered and both listeners are bound.
	g.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	g.health.SetServingStatus(extProcService, healthpb.HealthCheckResponse_SERVING)
	// Logged first, so that whoever sees /readyz answer 200 finds "ready" in the log.
	log.Info("ready", "version", version)
	adm.ready.Store(true)

	var failed error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "grace", o.shutdownTimeout.String())
	case failed = <-errc:
		log.Error("shutting down after a server failed", "error", failed)
	}
	shutdown(adm, g, o.shutdownTimeout, log)
	return failed
}

// shutdown stops the servers in the one order that loses nothing. First it
// says we are going, before we go: /readyz fails and health turns NOT_SERVING
// (Shutdown also ignores later updates) while the listeners still answer.
// Then the gRPC streams drain (stopGRPC). The admin server outlives the drain,
// so that probes see /readyz fail and the last metrics can be scraped. The
// watchers and the store close after serve returns (its defers), once no
// decision runs.
func shutdown(adm *adminServer, g *grpcServer, grace time.Duration, log *slog.Logger) {
	adm.ready.Store(false)
	g.health.Shutdown()
	stopGRPC(g.server, grace, log)
	adm.stop()
	log.Info("stopped")
}

// inputs are what serve reads before anything listens.
type inputs struct {
	policy *config.Policy
	// seen is the policy file's hash, taken before loading it: a change in
	// between is then seen by the first poll.
	seen     [32]byte
	keys     *bucket.Keys
	tls      *tlsreload.Server // nil: plaintext
	registry *prometheus.Registry
}

// readInputs loads the policy, the identity key and the TLS files, and builds
// the metrics registry.
func readInputs(o options, log *slog.Logger) (inputs, error) {
	in := inputs{seen: contentHash(o.configPath)}
	var err error
	if in.policy, err = loadPolicy(o, log); err != nil {
		return in, err
	}
	if in.keys, err = bucketKeys(o.identityKey, log); err != nil {
		return in, err
	}
	// Read before anything listens: a bad certificate fails the start, not the
	// first handshake.
	if in.tls, err = loadGRPCTLS(o, log); err != nil {
		return in, err
	}
	in.registry = prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := in.registry.Register(c); err != nil {
			return in, fmt.Errorf("register metrics: %w", err)
		}
	}
	return in, nil
}

// adminServer serves /metrics, /healthz and /readyz.
type adminServer struct {
	// ready is false until serve reports ready, and again once shutdown began.
	ready atomic.Bool
	stop  func() // idempotent
}

// startAdmin starts the admin server. It starts before the store is checked:
// while the start-up PING runs (up to pingTimeout), /healthz answers and
// /readyz says 503, so probes see "alive, not ready yet" rather than a
// refused connection.
func startAdmin(ctx context.Context, o options, reg *prometheus.Registry, errc chan<- error, log *slog.Logger) (*adminServer, error) {
	lis, err := net.Listen("tcp", o.adminAddr)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	a := &adminServer{}
	srv := &http.Server{
		Handler:           adminHandler(reg, &a.ready),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin server: %w", err)
		}
	}()
	log.Info("admin listening", "addr", lis.Addr().String())
	a.stop = sync.OnceFunc(func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), adminShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("admin server did not stop in time", "error", err)
			srv.Close()
		}
	})
	return a, nil
}

// grpcServer serves ext_proc and gRPC health on --grpc-addr.
type grpcServer struct {
	server *grpc.Server
	health *health.Server
}

// startGRPC starts the gRPC server, health NOT_SERVING until serve is ready.
func startGRPC(o options, proc *processor.Server, tls *tlsreload.Server, errc chan<- error, log *slog.Logger) (*grpcServer, error) {
	lis, err := listen(o.grpcAddr)
	if err != nil {
		return nil, err
	}
	limits := processor.Limits{MaxMessageBytes: o.maxMessageBytes, MaxInflightBytes: o.maxInflightBytes}
	// A GOMEMLIMIT in the environment is the operator's to keep, higher or
	// lower: a replica whose in-memory store holds many buckets needs more.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(limits.MemoryLimit())
	}
	log.Info("go memory limit", "bytes", debug.SetMemoryLimit(-1), "fromEnvironment", os.Getenv("GOMEMLIMIT") != "")
	opts := append(processor.TransportOptions(limits),
		// Shared answers go out as bytes marshalled once, and requests are read
		// straight from the wire (see Server.Codec).
		grpc.ForceServerCodecV2(proc.Codec()),
		// Stop (after the grace period) then waits for handlers to return, so the
		// store is never closed under a decision still running.
		grpc.WaitForHandlers(true))
	if tls != nil {
		// credentials.NewTLS adds ALPN h2 to every configuration the reloader
		// hands out; the handshake runs within TransportOptions' handshake
		// timeout.
		opts = append(opts, grpc.Creds(credentials.NewTLS(tls.Config())))
	}
	g := &grpcServer{server: grpc.NewServer(opts...), health: health.NewServer()}
	// health.NewServer reports "" SERVING from the start; nothing is served yet.
	g.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	proc.Register(g.server)
	healthpb.RegisterHealthServer(g.server, g.health)
	go func() {
		// Serve returns nil only after Stop or GracefulStop.
		if err := g.server.Serve(lis); err != nil {
			errc <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	log.Info("grpc listening", "network", lis.Addr().Network(), "addr", lis.Addr().String())
	return g, nil
}

// startWatchers starts the watchers of the TLS files and of the policy file
// (with SIGHUP), before "ready" is logged so that SIGHUP is handled by then.
// The returned function stops them and waits for them to return.
func startWatchers(ctx context.Context, o options, in inputs, hup <-chan os.Signal, lim *limiter.Limiter, m *metrics.Metrics, log *slog.Logger) func() {
	interval := o.pollInterval
	if interval <= 0 {
		interval = defaultPollInterval
	}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if in.tls != nil {
		wg.Go(func() { in.tls.Watch(wctx, tlsreload.WatchOptions{Interval: interval, Logger: log}) })
	}
	if o.configPath != "" {
		w := &policyWatcher{
			path: o.configPath, interval: interval, trigger: hup, current: in.policy,
			apply: lim.SetPolicy, reloaded: m.ConfigReloaded, log: log, last: in.seen,
		}
		wg.Go(func() { w.run(wctx) })
	}
	return func() {
		stop()
		wg.Wait()
	}
}

// loadPolicy reads --config, or returns the empty policy, which limits nothing.
func loadPolicy(o options, log *slog.Logger) (*config.Policy, error) {
	if o.configPath == "" {
		log.Warn("no --config: nothing is limited")
		return &config.Policy{}, nil
	}
	p, err := config.Load(o.configPath)
	if err != nil {
		return nil, problemsError{o.configPath, err}
	}
	log.Info("policy loaded", "file", o.configPath, "summary", summary(p))
	return p, nil
}

// bucketKeys builds bucket keys under identityKey (checked by parseFlags).
// Without one, keys are those of releases that had none, so an upgrade keeps
// every bucket, and a warning says what that exposes.
func bucketKeys(identityKey string, log *slog.Logger) (*bucket.Keys, error) {
	if identityKey == "" {
		log.Warn(noIdentityKeyWarning,
			"fix", "set EXTPROC_IDENTITY_KEY or --identity-key-file to the same 32 or more random bytes on every replica (openssl rand -hex 32)")
		return nil, nil
	}
	keys, err := bucket.NewKeys([]byte(identityKey))
	if err != nil {
		return nil, fmt.Errorf("identity key: %w", err)
	}
	log.Info("per-user bucket keys hash identities under the identity key")
	return keys, nil
}

// noIdentityKeyWarning is logged at start without an identity key.
const noIdentityKeyWarning = "no identity key: per-user bucket keys hash identities without a secret, so identities such as client IPs can be recovered from Redis key names"

// stopGRPC lets in-flight ext_proc streams finish, then cuts those still open.
//
// Budget: grace (--shutdown-timeout, 15 s by default) for the drain, then up to
// adminShutdownTimeout (2 s) for the admin server: 17 s, within Kubernetes'
// default terminationGracePeriodSeconds of 30 s. An ext_proc stream lives as long
// as one HTTP request's headers and body, so a few seconds normally suffice;
// the grace only matters for slow uploads and long-lived health Watch streams.
func stopGRPC(gs *grpc.Server, grace time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	log.Warn("grace period over: closing the streams still open", "grace", grace.String())
	gs.Stop()
	<-done
}

// adminHandler serves the admin endpoints. ready is false until the server
// serves and again once shutdown began.
func adminHandler(reg *prometheus.Registry, ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

// listen opens the --grpc-addr listener.
func listen(addr string) (net.Listener, error) {
	network, address, err := parseListenAddr(addr)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if err := removeStaleSocket(address); err != nil {
			return nil, fmt.Errorf("grpc listener: %w", err)
		}
	}
	lis, err := net.Listen(network, address)
	if err != nil {
		return nil, fmt.Errorf("grpc listener: %w", err)
	}
	return lis, nil
}

// removeStaleSocket removes the socket file a killed process left behind, on
// which Listen would fail with "address already in use". A socket that some
// process still accepts on, and a file that is not a socket, are left alone.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: another process is listening on it", path)
	}
	return os.Remove(path)
}
