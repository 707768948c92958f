package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/mcp-ratelimit/extproc/internal/tlsreload/tlstest"
)

// startTLSServe runs serve in-process with args (the TLS flags) until the test
// ends, reading the TLS files every 5 ms; it returns the gRPC address once the
// server is ready.
func startTLSServe(ctx context.Context, t *testing.T, args ...string) (string, *logRecords) {
	t.Helper()
	o, err := parseFlags(append([]string{"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, args...), mapEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	o.pollInterval = 5 * time.Millisecond
	logs := newLogRecords(t)
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- serve(sctx, o, newLogger(logs, o)) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: got error %v, want nil", err)
		}
	})
	target, _ := logs.addrs(ctx, t)
	logs.wait(ctx, t, "ready")
	return target, logs
}

func TestRunServesGRPCOverMutualTLSAndReloadsTheCertificate(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	serverCA, clientCA := tlstest.NewCA(t, "server CA"), tlstest.NewCA(t, "client CA")
	first := serverCA.Server(t, "127.0.0.1")
	secret := tlstest.NewSecretDir(t, map[string][]byte{"tls.crt": first.CertPEM, "tls.key": first.KeyPEM, "ca.crt": clientCA.PEM})
	target, logs := startTLSServe(ctx, t, "--grpc-tls-cert", secret.Path("tls.crt"),
		"--grpc-tls-key", secret.Path("tls.key"), "--grpc-client-ca", secret.Path("ca.crt"))
	if rec := logs.wait(ctx, t, "gRPC listener speaks TLS"); rec["mutual"] != true {
		t.Errorf("TLS start log: got mutual %v, want true", rec["mutual"])
	}

	client := clientCA.Client(t, "envoy")
	withCert := &tls.Config{RootCAs: serverCA.Pool(), Certificates: []tls.Certificate{client.TLSCertificate(t)}}
	check := func(name string, creds credentials.TransportCredentials, wantOK bool) *x509.Certificate {
		t.Helper()
		conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		var pr peer.Peer
		_, err = healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{Service: extProcService}, grpc.Peer(&pr))
		if (err == nil) != wantOK {
			t.Errorf("%s: health Check got error %v, want success %v", name, err, wantOK)
		}
		if err != nil {
			return nil
		}
		info, ok := pr.AuthInfo.(credentials.TLSInfo)
		if !ok || len(info.State.PeerCertificates) == 0 {
			t.Fatalf("%s: got peer auth %T, want TLS with the server's certificate", name, pr.AuthInfo)
		}
		return info.State.PeerCertificates[0]
	}

	if got := check("client certificate from the client CA", credentials.NewTLS(withCert), true); got != nil && got.SerialNumber.Cmp(first.Cert.SerialNumber) != 0 {
		t.Errorf("presented serial %x, want %x", got.SerialNumber, first.Cert.SerialNumber)
	}
	check("no client certificate", credentials.NewTLS(&tls.Config{RootCAs: serverCA.Pool()}), false)
	check("plaintext", insecure.NewCredentials(), false)

	second := serverCA.Server(t, "127.0.0.1")
	secret.Update(map[string][]byte{"tls.crt": second.CertPEM, "tls.key": second.KeyPEM, "ca.crt": clientCA.PEM})
	logs.wait(ctx, t, "TLS certificate reloaded")
	if got := check("after the rotation", credentials.NewTLS(withCert), true); got != nil && got.SerialNumber.Cmp(second.Cert.SerialNumber) != 0 {
		t.Errorf("after the rotation: presented serial %x, want the new certificate's %x", got.SerialNumber, second.Cert.SerialNumber)
	}
}

func TestRunFailsOnABadTLSFileNamingItsFlag(t *testing.T) {
	ca := tlstest.NewCA(t, "CA")
	server, other := ca.Server(t, "127.0.0.1"), ca.Server(t, "127.0.0.1")
	cert, key := writeFile(t, "tls.crt", string(server.CertPEM)), writeFile(t, "tls.key", string(server.KeyPEM))
	garbage := writeFile(t, "garbage", "not PEM\n")
	tests := []struct {
		name     string
		args     []string
		wantFlag string
	}{
		{"certificate not PEM", []string{"--grpc-tls-cert", garbage, "--grpc-tls-key", key}, "--grpc-tls-cert"},
		{"key of another certificate", []string{"--grpc-tls-cert", cert, "--grpc-tls-key", writeFile(t, "other.key", string(other.KeyPEM))}, "--grpc-tls-key"},
		{"client CA missing", []string{"--grpc-tls-cert", cert, "--grpc-tls-key", key, "--grpc-client-ca", garbage + ".missing"}, "--grpc-client-ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, tt.args...)
			err := run(t.Context(), args, new(strings.Builder), newLogRecords(t), mapEnv(nil))
			if got := exitCode(err); got != 1 {
				t.Fatalf("exit code: got %d (error %v), want 1", got, err)
			}
			if !strings.HasPrefix(err.Error(), fmt.Sprintf("gRPC TLS: %s: ", tt.wantFlag)) {
				t.Errorf("got error %q, want it to start with the flag %s", err, tt.wantFlag)
			}
		})
	}
}
