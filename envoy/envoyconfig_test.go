package envoyconfig

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite envoy.yaml from the template with Defaults()")

// The shipped file must be exactly the template rendered with the defaults, so that
// the configuration the integration tests run is the one users get.
func TestShippedEnvoyYAMLIsTheRenderedTemplate(t *testing.T) {
	got, err := Render(Defaults())
	if err != nil {
		t.Fatalf("Render(Defaults()): %v", err)
	}
	if *update {
		if err := os.WriteFile("envoy.yaml", got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("envoy/envoy.yaml differs from the template rendered with Defaults(); run `go test ./envoy -update`")
	}
}

func TestRenderPutsEveryEndpointInItsCluster(t *testing.T) {
	p := Defaults()
	p.ExtProc = []Endpoint{{Host: "127.0.0.1", Port: 7001}, {Host: "127.0.0.1", Port: 7002}}
	p.Upstream = []Endpoint{{Host: "127.0.0.1", Port: 7003}}
	out, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"7001", "7002", "7003"} {
		if got := strings.Count(string(out), "port_value: "+port+"}"); got != 1 {
			t.Errorf("port %s appears %d times, want 1", port, got)
		}
	}
}

func TestRenderAddsJWTAuthnBeforeExtProcOnlyWhenAsked(t *testing.T) {
	plain, err := Render(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(plain), "jwt_authn.v3") {
		t.Errorf("Defaults(): got a jwt_authn filter, want none")
	}
	p := Defaults()
	p.JWTAuthn = &JWTAuthn{Issuer: "https://issuer.test", JWKS: `{"keys":[{"kty":"RSA","n":"x\"y","e":"AQAB"}]}`}
	out, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	jwt, ext := strings.Index(s, "- name: envoy.filters.http.jwt_authn"), strings.Index(s, "- name: envoy.filters.http.ext_proc")
	if jwt < 0 || jwt > ext {
		t.Errorf("jwt_authn filter at %d, ext_proc at %d: want jwt_authn first", jwt, ext)
	}
	for _, want := range []string{
		`issuer: "https://issuer.test"`,
		`inline_string: "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"x\\\"y\",\"e\":\"AQAB\"}]}"`,
		`payload_in_metadata: "jwt_payload"`,
		"- allow_missing: {}",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("rendered config lacks %s", want)
		}
	}
}

func TestRenderRejectsInvalidParams(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Params)
		want   string
	}{
		{"no upstream", func(p *Params) { p.Upstream = nil }, "Upstream"},
		{"no extproc", func(p *Params) { p.ExtProc = nil }, "ExtProc"},
		{"zero buffer", func(p *Params) { p.BufferLimitBytes = 0 }, "BufferLimitBytes"},
		{"sub-millisecond timeout", func(p *Params) { p.MessageTimeout = 1500 * time.Microsecond }, "MessageTimeout"},
		{"jwt without issuer", func(p *Params) { p.JWTAuthn = &JWTAuthn{JWKS: `{"keys":[]}`} }, "JWTAuthn.Issuer"},
		{"jwt with a JWKS that is not JSON", func(p *Params) { p.JWTAuthn = &JWTAuthn{Issuer: "i", JWKS: "{"} }, "JWTAuthn.JWKS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Defaults()
			tt.modify(&p)
			_, err := Render(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %v, want one naming %s", err, tt.want)
			}
		})
	}
}

func TestEnvoyDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{500 * time.Millisecond, "0.500s"},
		{2 * time.Second, "2.000s"},
		{1250 * time.Millisecond, "1.250s"},
	}
	for _, tt := range tests {
		if got := envoyDuration(tt.d); got != tt.want {
			t.Errorf("envoyDuration(%v): got %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestRenderGivesTheExtProcClusterTLSOnlyWhenAsked(t *testing.T) {
	plain, err := Render(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(plain), "\n") {
		if strings.Contains(line, "transport_socket") && !strings.HasPrefix(strings.TrimSpace(line), "#") {
			t.Errorf("Defaults(): got an uncommented %q, want plaintext", line)
		}
	}

	p := Defaults()
	p.ExtProcTLS = &ExtProcTLS{SNI: "extproc.test", TrustedCA: "/tls/ca.crt", ClientCert: "/tls/tls.crt", ClientKey: "/tls/tls.key"}
	out, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	cluster := s[strings.Index(s, "- name: extproc\n"):]
	for _, want := range []string{
		"    transport_socket:\n      name: envoy.transport_sockets.tls",
		`sni: "extproc.test"`,
		`trusted_ca: {filename: "/tls/ca.crt"}`,
		`matcher: {exact: "extproc.test"}`,
		`certificate_chain: {filename: "/tls/tls.crt"}`,
		`private_key: {filename: "/tls/tls.key"}`,
		"alpn_protocols: [h2]",
	} {
		if !strings.Contains(cluster, want) {
			t.Errorf("extproc cluster lacks %s", want)
		}
	}

	p.ExtProcTLS = &ExtProcTLS{SNI: "extproc.test", TrustedCA: "/tls/ca.crt"}
	if out, err = Render(p); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(line) == "tls_certificates:" {
			t.Error("TLS without a client certificate: got tls_certificates, want none")
		}
	}
}

func TestRenderRefusesAnIncompleteExtProcTLS(t *testing.T) {
	p := Defaults()
	p.ExtProcTLS = &ExtProcTLS{ClientCert: "/tls/tls.crt"}
	_, err := Render(p)
	for _, want := range []string{"ExtProcTLS.SNI: empty", "ExtProcTLS.TrustedCA: empty", "ExtProcTLS.ClientCert and ClientKey: set both or neither"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got error %v, want it to contain %q", err, want)
		}
	}
}
