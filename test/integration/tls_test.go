package integration

import (
	"context"
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	envoyconfig "github.com/mcp-ratelimit/extproc/envoy"
	"github.com/mcp-ratelimit/extproc/internal/tlsreload/tlstest"
	"github.com/mcp-ratelimit/extproc/test/integration/harness"
	"github.com/mcp-ratelimit/extproc/test/mcpserver/demo"
)

// extprocSNI is the name the processor's test certificate carries and Envoy asks for.
const extprocSNI = "extproc.test"

// mtlsFiles is a test CA's PKI for mutual TLS between Envoy and the processor,
// written to files.
type mtlsFiles struct {
	ca                    *tlstest.CA
	caFile                string
	serverCert, serverKey string // the processor's
	clientCert, clientKey string // Envoy's
	client                tlstest.Leaf
}

func newMTLSFiles(t *testing.T) mtlsFiles {
	t.Helper()
	ca := tlstest.NewCA(t, "integration CA")
	server, client := ca.Server(t, extprocSNI, "127.0.0.1"), ca.Client(t, "envoy")
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		// 0644: a containerised Envoy reads them as another user.
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return mtlsFiles{
		ca: ca, caFile: write("ca.crt", ca.PEM), client: client,
		serverCert: write("server.crt", server.CertPEM), serverKey: write("server.key", server.KeyPEM),
		clientCert: write("client.crt", client.CertPEM), clientKey: write("client.key", client.KeyPEM),
	}
}

// extprocArgs start the processor with mutual TLS.
func (m mtlsFiles) extprocArgs() []string {
	return []string{"--grpc-tls-cert", m.serverCert, "--grpc-tls-key", m.serverKey, "--grpc-client-ca", m.caFile}
}

// envoyTLS is the extproc cluster's side of it.
func (m mtlsFiles) envoyTLS() *envoyconfig.ExtProcTLS {
	return &envoyconfig.ExtProcTLS{SNI: extprocSNI, TrustedCA: m.caFile, ClientCert: m.clientCert, ClientKey: m.clientKey}
}

func TestToolsCallsThroughEnvoyAreDecidedOverMutualTLS(t *testing.T) {
	pki := newMTLSFiles(t)
	env := start(t, sharedPolicy(1), harness.Options{MemoryStore: true, ExtprocArgs: pki.extprocArgs(), ExtProcTLS: pki.envoyTLS()})
	raw := newRawClient(t, env.URL)
	checkPassed(t, "first tools/call", raw.call("1", demo.ToolEcho))
	// Envoy's failure_mode_allow would let the second call through if it could
	// not reach the processor: only a decision made over TLS rejects it.
	checkRejected(t, raw.call("2", demo.ToolEcho), "2", "server", "shared")
	if got := env.Upstream.Calls(demo.ToolEcho); got != 1 {
		t.Errorf("upstream echo calls: got %d, want 1", got)
	}
}

func TestOnlyClientsWithACertificateOpenExtProcStreamsUnderMutualTLS(t *testing.T) {
	if buildErr != nil {
		t.Fatalf("extproc binary: %v", buildErr)
	}
	pki := newMTLSFiles(t)
	e := harness.StartExtproc(t, harness.ExtprocOptions{Binary: extprocBin, ExtraArgs: pki.extprocArgs()})
	trustServer := &tls.Config{RootCAs: pki.ca.Pool(), ServerName: extprocSNI}
	withCert := trustServer.Clone()
	withCert.Certificates = []tls.Certificate{pki.client.TLSCertificate(t)}
	tests := []struct {
		name   string
		creds  credentials.TransportCredentials
		wantOK bool
	}{
		{"client certificate from the CA", credentials.NewTLS(withCert), true},
		{"TLS without a client certificate", credentials.NewTLS(trustServer), false},
		{"plaintext", insecure.NewCredentials(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := openExtProcStream(t, e.GRPCAddr, tt.creds)
			if (err == nil) != tt.wantOK {
				t.Errorf("ext_proc stream: got error %v, want success %v", err, tt.wantOK)
			}
		})
	}
}

// openExtProcStream opens an ext_proc stream as Envoy does and sends a
// request's headers; it returns nil once the processor has answered them.
func openExtProcStream(t *testing.T, target string, creds credentials.TransportCredentials) error {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := extprocv3.NewExternalProcessorClient(conn).Process(ctx)
	if err != nil {
		return err
	}
	hdr := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
	if err := s.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
		RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			hdr(":method", "POST"), hdr(":path", "/mcp"), hdr(":authority", "mcp.example.com"),
			hdr("content-type", "application/json"),
		}}},
	}}); err != nil {
		return err
	}
	_, err = s.Recv()
	return err
}

// The TLS block of the template, rendered as the tests render it, is one Envoy
// accepts (it reads the files, so they must exist).
func TestTemplateWithMutualTLSToTheProcessorPassesEnvoyValidate(t *testing.T) {
	envoy := harness.EnvoyTool.Require(t)
	p := envoyconfig.Defaults()
	p.ExtProc = []envoyconfig.Endpoint{{Host: "127.0.0.1", Port: 50051}}
	p.Upstream = []envoyconfig.Endpoint{{Host: "127.0.0.1", Port: 8080}}
	p.ExtProcTLS = newMTLSFiles(t).envoyTLS()
	cfg, err := envoyconfig.Render(p)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), envoy, "--mode", "validate", "-c", path, "--log-level", "warning").CombinedOutput()
	if err != nil {
		t.Errorf("envoy --mode validate: %v\n%s\nconfig:\n%s", err, out, cfg)
	}
}
