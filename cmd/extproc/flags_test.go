package main

import (
	"errors"
	"flag"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseFlagsResolvesFlagEnvAndDefault(t *testing.T) {
	defaults := options{
		grpcAddr:         ":50051",
		adminAddr:        ":8081",
		logLevel:         slog.LevelInfo,
		logFormat:        "json",
		shutdownTimeout:  15 * time.Second,
		maxMessageBytes:  5 << 20,
		maxInflightBytes: 256 << 20,
	}
	with := func(f func(*options)) options {
		o := defaults
		f(&o)
		return o
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want options
	}{
		{name: "defaults without flags or env", want: defaults},
		{
			name: "env fills every option",
			env: map[string]string{
				"EXTPROC_CONFIG": "/etc/p.yaml", "EXTPROC_GRPC_ADDR": "unix:///run/x.sock",
				"EXTPROC_ADMIN_ADDR": "127.0.0.1:9000", "REDIS_URL": "redis://r:6379/1",
				"EXTPROC_LOG_LEVEL": "debug", "EXTPROC_LOG_FORMAT": "text",
				"EXTPROC_SHUTDOWN_TIMEOUT": "3s", "REDIS_PASSWORD": "s3cret",
				"REDIS_SENTINEL_PASSWORD": "s3ntinel", "EXTPROC_GRPC_MAX_MESSAGE_BYTES": "8388608",
				"EXTPROC_GRPC_MAX_INFLIGHT_BYTES": "67108864",
				"EXTPROC_GRPC_TLS_CERT":           "/tls/tls.crt", "EXTPROC_GRPC_TLS_KEY": "/tls/tls.key",
				"EXTPROC_GRPC_CLIENT_CA": "/tls/ca.crt",
			},
			want: options{
				configPath: "/etc/p.yaml", grpcAddr: "unix:///run/x.sock", adminAddr: "127.0.0.1:9000",
				redisURL: "redis://r:6379/1", redisPassword: "s3cret", redisSentinelPassword: "s3ntinel",
				logLevel:  slog.LevelDebug,
				logFormat: "text", shutdownTimeout: 3 * time.Second, maxMessageBytes: 8 << 20, maxInflightBytes: 64 << 20,
				grpcTLSCert: "/tls/tls.crt", grpcTLSKey: "/tls/tls.key", grpcClientCA: "/tls/ca.crt",
			},
		},
		{
			name: "flags win over env",
			args: []string{
				"--config", "flag.yaml", "--grpc-addr", "127.0.0.1:0", "--admin-addr=:0",
				"--redis-url", "rediss://flag:6380", "--log-level", "WARN", "--log-format", "text",
				"--shutdown-timeout", "1m", "--grpc-max-message-bytes", "6291456", "--grpc-max-inflight-bytes", "33554432",
				"--grpc-tls-cert", "flag.crt", "--grpc-tls-key", "flag.key", "--grpc-client-ca", "flag-ca.crt",
			},
			env: map[string]string{
				"EXTPROC_CONFIG": "env.yaml", "EXTPROC_GRPC_ADDR": ":1", "EXTPROC_ADMIN_ADDR": ":2",
				"REDIS_URL": "redis://env:6379", "EXTPROC_LOG_LEVEL": "debug",
				"EXTPROC_LOG_FORMAT": "json", "EXTPROC_SHUTDOWN_TIMEOUT": "2s",
				"EXTPROC_GRPC_MAX_MESSAGE_BYTES": "8388608", "EXTPROC_GRPC_MAX_INFLIGHT_BYTES": "67108864",
				"EXTPROC_GRPC_TLS_CERT": "env.crt", "EXTPROC_GRPC_TLS_KEY": "env.key", "EXTPROC_GRPC_CLIENT_CA": "env-ca.crt",
			},
			want: options{
				configPath: "flag.yaml", grpcAddr: "127.0.0.1:0", adminAddr: ":0",
				redisURL: "rediss://flag:6380", logLevel: slog.LevelWarn, logFormat: "text",
				shutdownTimeout: time.Minute, maxMessageBytes: 6 << 20, maxInflightBytes: 32 << 20,
				grpcTLSCert: "flag.crt", grpcTLSKey: "flag.key", grpcClientCA: "flag-ca.crt",
			},
		},
		{
			name: "empty env counts as unset",
			env:  map[string]string{"EXTPROC_GRPC_ADDR": "", "EXTPROC_LOG_LEVEL": ""},
			want: defaults,
		},
		{
			name: "single-dash flags work too",
			args: []string{"-log-level", "error"},
			want: with(func(o *options) { o.logLevel = slog.LevelError }),
		},
		{
			name: "an empty --redis-url flag overrides REDIS_URL",
			args: []string{"--redis-url="},
			env:  map[string]string{"REDIS_URL": "redis://env:6379"},
			want: defaults,
		},
		{
			name: "TLS without a client CA",
			args: []string{"--grpc-tls-cert", "tls.crt"},
			env:  map[string]string{"EXTPROC_GRPC_TLS_KEY": "tls.key"},
			want: with(func(o *options) { o.grpcTLSCert, o.grpcTLSKey = "tls.crt", "tls.key" }),
		},
		{
			name: "a valid flag makes an invalid env value irrelevant",
			args: []string{"--log-level", "info"},
			env:  map[string]string{"EXTPROC_LOG_LEVEL": "verbose"},
			want: defaults,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, mapEnv(tt.env))
			if err != nil {
				t.Fatalf("parseFlags: got error %v, want nil", err)
			}
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseFlagsRejectsInvalidValues(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		// wantErr are substrings of the error; the first names the source.
		wantErr []string
	}{
		{name: "unknown log level flag", args: []string{"--log-level", "verbose"}, wantErr: []string{`--log-level "verbose"`, "debug, info, warn or error"}},
		{name: "unknown log level env", env: map[string]string{"EXTPROC_LOG_LEVEL": "verbose"}, wantErr: []string{`EXTPROC_LOG_LEVEL "verbose"`}},
		{name: "unknown log format", args: []string{"--log-format", "xml"}, wantErr: []string{`--log-format "xml"`, "json or text"}},
		{name: "shutdown timeout not a duration", args: []string{"--shutdown-timeout", "15"}, wantErr: []string{"--shutdown-timeout", "Go duration"}},
		{name: "shutdown timeout zero", env: map[string]string{"EXTPROC_SHUTDOWN_TIMEOUT": "0s"}, wantErr: []string{"EXTPROC_SHUTDOWN_TIMEOUT", "> 0"}},
		{name: "grpc addr without port", args: []string{"--grpc-addr", "50051"}, wantErr: []string{"--grpc-addr", "host:port"}},
		{name: "unix socket without path", args: []string{"--grpc-addr", "unix://"}, wantErr: []string{"--grpc-addr", "unix:///path"}},
		{name: "admin addr without port", env: map[string]string{"EXTPROC_ADMIN_ADDR": "localhost"}, wantErr: []string{"EXTPROC_ADMIN_ADDR", "host:port"}},
		{name: "redis url with another scheme", args: []string{"--redis-url", "http://r:6379"}, wantErr: []string{"--redis-url", "redis, rediss or unix"}},
		{name: "redis url without host", env: map[string]string{"REDIS_URL": "redis:///0"}, wantErr: []string{"REDIS_URL"}},
		{name: "message limit too small", args: []string{"--grpc-max-message-bytes", "1024"}, wantErr: []string{"--grpc-max-message-bytes", "65536 to 268435456"}},
		{name: "inflight bound not a number", args: []string{"--grpc-max-inflight-bytes", "256MiB"}, wantErr: []string{"--grpc-max-inflight-bytes", "1048576 to 1099511627776"}},
		{name: "inflight bound negative", env: map[string]string{"EXTPROC_GRPC_MAX_INFLIGHT_BYTES": "-1"}, wantErr: []string{"EXTPROC_GRPC_MAX_INFLIGHT_BYTES", "1048576 to 1099511627776"}},
		{name: "inflight bound under four messages", args: []string{"--grpc-max-inflight-bytes", "16777216"}, wantErr: []string{"--grpc-max-inflight-bytes", "under 4 × --grpc-max-message-bytes (5242880)"}},
		{name: "TLS certificate without a key", args: []string{"--grpc-tls-cert", "tls.crt"}, wantErr: []string{"--grpc-tls-cert and --grpc-tls-key", "set both"}},
		{name: "TLS key without a certificate", env: map[string]string{"EXTPROC_GRPC_TLS_KEY": "tls.key"}, wantErr: []string{"--grpc-tls-cert and --grpc-tls-key", "set both"}},
		{name: "client CA without TLS", args: []string{"--grpc-client-ca", "ca.crt"}, wantErr: []string{"--grpc-client-ca", "needs --grpc-tls-cert and --grpc-tls-key"}},
		{name: "unknown flag", args: []string{"--colour"}, wantErr: []string{"colour"}},
		{name: "stray argument", args: []string{"serve"}, wantErr: []string{`unexpected argument "serve"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFlags(tt.args, mapEnv(tt.env))
			if err == nil {
				t.Fatal("got nil error, want one")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
			if got := exitCode(err); got != 2 {
				t.Errorf("exit code: got %d, want 2", got)
			}
		})
	}
}

func TestParseFlagsNeverQuotesARedisPassword(t *testing.T) {
	_, err := parseFlags([]string{"--redis-url", "http://user:hunter2@r:6379"}, mapEnv(nil))
	if err == nil {
		t.Fatal("got nil error, want one")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("got error %q, want the password redacted", err)
	}
}

func TestParseFlagsReturnsErrHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		if _, err := parseFlags([]string{arg}, mapEnv(nil)); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s: got error %v, want flag.ErrHelp", arg, err)
		}
	}
}

// mapEnv is a getenv over m.
func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseFlagsReadsTheIdentityKey(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef" // 32 bytes, the shortest accepted
	withNewline := writeFile(t, "newline", key+"\n")
	withCRLF := writeFile(t, "crlf", key+"\r\n")
	other := writeFile(t, "other", "another key, also long enough: 0123456789")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{name: "none: no identity key", want: ""},
		{name: "file from the flag, trailing newline dropped", args: []string{"--identity-key-file", withNewline}, want: key},
		{name: "file from the env", env: map[string]string{"EXTPROC_IDENTITY_KEY_FILE": withNewline}, want: key},
		{name: "trailing CRLF dropped", args: []string{"--identity-key-file", withCRLF}, want: key},
		{name: "the flag's file wins over the env's file", args: []string{"--identity-key-file", other},
			env: map[string]string{"EXTPROC_IDENTITY_KEY_FILE": withNewline}, want: "another key, also long enough: 0123456789"},
		{name: "key itself from the env", env: map[string]string{"EXTPROC_IDENTITY_KEY": key}, want: key},
		{name: "key from the env, trailing newline dropped", env: map[string]string{"EXTPROC_IDENTITY_KEY": key + "\n"}, want: key},
		{name: "an empty file name counts as unset", args: []string{"--identity-key-file="}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, mapEnv(tt.env))
			if err != nil {
				t.Fatalf("parseFlags: got error %v, want nil", err)
			}
			if o.identityKey != tt.want {
				t.Errorf("got identity key %q, want %q", o.identityKey, tt.want)
			}
		})
	}
}

func TestParseFlagsRejectsABadIdentityKey(t *testing.T) {
	const short = "0123456789abcdef0123456789abcde" // 31 bytes
	shortFile := writeFile(t, "short", short+"\n")
	emptyFile := writeFile(t, "empty", "")
	goodFile := writeFile(t, "good", short+"f\n")
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr []string
	}{
		{name: "short key in a file (its newline does not count)", args: []string{"--identity-key-file", shortFile},
			wantErr: []string{`--identity-key-file "` + shortFile + `"`, "31 bytes, want at least 32", "openssl rand -hex 32"}},
		{name: "empty file", env: map[string]string{"EXTPROC_IDENTITY_KEY_FILE": emptyFile},
			wantErr: []string{"EXTPROC_IDENTITY_KEY_FILE", "0 bytes, want at least 32"}},
		{name: "missing file", args: []string{"--identity-key-file", missing},
			wantErr: []string{`--identity-key-file "` + missing + `"`, "no such file"}},
		{name: "short key in the env", env: map[string]string{"EXTPROC_IDENTITY_KEY": short},
			wantErr: []string{"invalid EXTPROC_IDENTITY_KEY", "31 bytes, want at least 32"}},
		{name: "key in both a file and the env", args: []string{"--identity-key-file", goodFile},
			env:     map[string]string{"EXTPROC_IDENTITY_KEY": short + "f"},
			wantErr: []string{"EXTPROC_IDENTITY_KEY and --identity-key-file", "both set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFlags(tt.args, mapEnv(tt.env))
			if err == nil {
				t.Fatal("got nil error, want one")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), short) {
				t.Errorf("got error %q, want the key itself never quoted", err)
			}
			if got := exitCode(err); got != 2 {
				t.Errorf("exit code: got %d, want 2", got)
			}
		})
	}
}
