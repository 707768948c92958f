package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// Extproc is one running extproc replica.
type Extproc struct {
	*Process
	GRPCAddr  string // 127.0.0.1:port, the ext_proc listener
	AdminAddr string // 127.0.0.1:port, /healthz /readyz /metrics
}

// ExtprocOptions configure StartExtproc.
type ExtprocOptions struct {
	// Binary is the built extproc (BuildExtproc); required.
	Binary string
	// ConfigPath is the policy file; empty: no --config (nothing is limited).
	ConfigPath string
	// RedisURL; empty: the in-memory store.
	RedisURL string
	// Name labels the logs; default "extproc".
	Name string
	// LogFormat is --log-format: "json" for tests that read records
	// (Process.LogRecords); empty: "text".
	LogFormat string
	// Args are more command-line arguments, after the harness's own (the TLS
	// flags, say).
	Args []string
}

// StartExtproc starts the real CLI on free ports and waits until /readyz answers 200.
func StartExtproc(tb testing.TB, o ExtprocOptions) *Extproc {
	tb.Helper()
	if o.Binary == "" {
		tb.Fatal("harness: ExtprocOptions.Binary is empty; build it in TestMain with BuildExtproc")
	}
	if o.Name == "" {
		o.Name = "extproc"
	}
	if o.LogFormat == "" {
		o.LogFormat = "text"
	}
	e := &Extproc{GRPCAddr: Addr(FreePort(tb)), AdminAddr: Addr(FreePort(tb))}
	args := []string{"--grpc-addr", e.GRPCAddr, "--admin-addr", e.AdminAddr,
		"--log-format", o.LogFormat, "--log-level", "debug"}
	if o.ConfigPath != "" {
		args = append(args, "--config", o.ConfigPath)
	}
	if o.RedisURL != "" {
		args = append(args, "--redis-url", o.RedisURL)
	}
	// An identity key, as every shipped deployment sets one: without it
	// extproc warns at start, and tests that count warnings would see it.
	keyFile := filepath.Join(tb.TempDir(), "identity.key")
	if err := os.WriteFile(keyFile, []byte("integration-test-identity-key-of-32-bytes-or-more\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	args = append(args, "--identity-key-file", keyFile)
	args = append(args, o.Args...)
	e.Process = startProcess(tb, o.Name, o.Binary, args...)
	if err := e.WaitReady(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return e
}

// WaitReady polls /readyz until it answers 200.
func (e *Extproc) WaitReady(ctx context.Context) error {
	return WaitFor(ctx, e.Name, e.Process, func(ctx context.Context) error {
		return HTTPOK(ctx, "http://"+e.AdminAddr+"/readyz")
	})
}

// HTTPOK GETs url and wants 200 (readiness probes).
func HTTPOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: got %d %q, want 200", url, resp.StatusCode, body)
	}
	return nil
}
