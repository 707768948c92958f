package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunSubcommands(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // substring
		wantErr    string // substring
	}{
		{name: "help prints usage", args: []string{"help"}, wantStdout: "extproc check-config FILE"},
		{name: "-h prints usage", args: []string{"-h"}, wantStdout: "--redis-url (env REDIS_URL"},
		{name: "--help prints usage", args: []string{"--help"}, wantStdout: "--shutdown-timeout"},
		{name: "version prints the version and Go version", args: []string{"version"}, wantStdout: "extproc dev go1."},
		{name: "version takes no argument", args: []string{"version", "x"}, wantCode: 2, wantErr: "no arguments"},
		{name: "check-config needs a file", args: []string{"check-config"}, wantCode: 2, wantErr: "exactly one FILE"},
		{name: "check-config takes one file", args: []string{"check-config", "a", "b"}, wantCode: 2, wantErr: "exactly one FILE"},
		{name: "unknown flag is a usage error", args: []string{"--nope"}, wantCode: 2, wantErr: "nope"},
		{name: "missing config file fails", args: []string{"check-config", "/does/not/exist.yaml"}, wantCode: 1, wantErr: "/does/not/exist.yaml: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, &stdout, &stderr, mapEnv(nil))
			if got := exitCode(err); got != tt.wantCode {
				t.Fatalf("exit code: got %d (error %v), want %d", got, err, tt.wantCode)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %q, want it to contain %q", err, tt.wantErr)
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("got stdout %q, want it to contain %q", stdout.String(), tt.wantStdout)
			}
		})
	}
}

func TestCheckConfigAcceptsAValidPolicy(t *testing.T) {
	file := writeFile(t, "policy.yaml", validPolicy)
	var stdout bytes.Buffer
	err := run(t.Context(), []string{"check-config", file}, &stdout, new(bytes.Buffer), mapEnv(nil))
	if err != nil {
		t.Fatalf("got error %v, want nil", err)
	}
	want := file + ": ok\n1 server: github (2 buckets); store: memory unless --redis-url is given\n"
	if got := stdout.String(); got != want {
		t.Errorf("got stdout %q, want %q", got, want)
	}
}

func TestCheckConfigSummaryNamesPlansAndCountsTheirBuckets(t *testing.T) {
	const file = "../../examples/plans.yaml"
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"check-config", file}, &stdout, new(bytes.Buffer), mapEnv(nil)); err != nil {
		t.Fatalf("got error %v, want nil", err)
	}
	want := file + ": ok\n1 server: saas (9 buckets; plans free internal pro, default free); store: memory unless --redis-url is given\n"
	if got := stdout.String(); got != want {
		t.Errorf("got stdout %q, want %q", got, want)
	}
}

func TestCheckConfigReportsEveryProblemPrefixedByTheFile(t *testing.T) {
	file := writeFile(t, "policy.yaml", invalidPolicy)
	var stdout bytes.Buffer
	err := run(t.Context(), []string{"check-config", file}, &stdout, new(bytes.Buffer), mapEnv(nil))
	if got := exitCode(err); got != 1 {
		t.Fatalf("exit code: got %d (error %v), want 1", got, err)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) < 2 {
		t.Fatalf("got %d problem lines %q, want at least 2", len(lines), lines)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, file+": ") {
			t.Errorf("got line %q, want it prefixed by %q", l, file+": ")
		}
	}
	for _, path := range []string{"rateLimiting.shared.maxTokens", "rateLimiting.bogus"} {
		if !strings.Contains(err.Error(), path) {
			t.Errorf("got problems %q, want one naming %s", err, path)
		}
	}
	if stdout.Len() != 0 {
		t.Errorf("got stdout %q, want nothing", stdout.String())
	}
}

func TestRunFailsOnAnInvalidPolicy(t *testing.T) {
	file := writeFile(t, "policy.yaml", invalidPolicy)
	args := []string{"--config", file, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}
	err := run(t.Context(), args, new(bytes.Buffer), newLogRecords(t), mapEnv(nil))
	if got := exitCode(err); got != 1 {
		t.Fatalf("exit code: got %d (error %v), want 1", got, err)
	}
	if !strings.Contains(err.Error(), file+": rateLimiting.shared.maxTokens") {
		t.Errorf("got error %q, want the problem prefixed by the file", err)
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{context.Canceled, 1},
		{usageErrorf("bad"), 2},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v): got %d, want %d", tt.err, got, tt.want)
		}
	}
}
