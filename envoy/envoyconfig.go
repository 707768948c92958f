// Package envoyconfig renders the shipped Envoy configuration (envoy/envoy.yaml) from
// its template. The shipped file is the template rendered with Defaults(); the
// integration tests render the same template with their own addresses, so what CI
// runs is what users run.
package envoyconfig

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"text/template"
	"time"
)

//go:embed envoy.yaml.tmpl
var templateText string

var tmpl = template.Must(template.New("envoy.yaml").Option("missingkey=error").Parse(templateText))

// Endpoint is one host:port of a cluster. Host is an IP or a DNS name (clusters are
// STRICT_DNS, which also accepts IP literals).
type Endpoint struct {
	Host string
	Port int
}

// Params fill the template. Use Defaults() and change what differs.
type Params struct {
	// AdminAddress and AdminPort: Envoy's admin listener (/ready, /stats).
	AdminAddress string
	AdminPort    int
	// ListenAddress and ListenPort: where MCP clients connect.
	ListenAddress string
	ListenPort    int
	// Upstream: the MCP server's endpoints; at least one.
	Upstream []Endpoint
	// ExtProc: the processor replicas' gRPC endpoints; at least one.
	ExtProc []Endpoint
	// BufferLimitBytes: the largest request body Envoy buffers for ext_proc; larger
	// bodies get Envoy's 413.
	BufferLimitBytes int
	// MessageTimeout: how long Envoy waits for each processor answer before applying
	// failure_mode_allow. Whole milliseconds.
	MessageTimeout time.Duration
	// JWTAuthn, when set, adds Envoy's jwt_authn filter before ext_proc with one
	// provider and a local JWKS: a valid token's payload reaches the processor as
	// metadata (identity source jwtClaim), a missing token passes, an invalid one
	// gets 401. Nil (the shipped envoy.yaml): no jwt_authn filter.
	JWTAuthn *JWTAuthn
	// ExtProcTLS, when set, makes Envoy reach the processor over TLS. Nil (the
	// shipped envoy.yaml): plaintext, with the TLS block shown commented out.
	ExtProcTLS *ExtProcTLS
}

// ExtProcTLS configures the extproc cluster's TLS transport socket. Paths are
// files as Envoy sees them.
type ExtProcTLS struct {
	// SNI is the server name Envoy sends; the processor's certificate must carry
	// it as a DNS subject alternative name. Required.
	SNI string
	// TrustedCA holds the CA certificates that sign the processor's certificate.
	// Required.
	TrustedCA string
	// ClientCert and ClientKey, both or neither, are the certificate and key Envoy
	// presents for mutual TLS (extproc --grpc-client-ca). Empty: none.
	ClientCert, ClientKey string
}

// JWTAuthn configures the optional jwt_authn filter.
type JWTAuthn struct {
	// Issuer is the iss claim the tokens must carry.
	Issuer string
	// JWKS is the JSON Web Key Set that verifies the tokens, inlined into the config.
	JWKS string
	// PayloadInMetadata names the verified payload in the jwt_authn metadata
	// namespace; empty: "jwt_payload".
	PayloadInMetadata string
}

// DefaultBufferLimitBytes is the documented request body limit: 4 MiB.
const DefaultBufferLimitBytes = 4 << 20

// Defaults are the values of the shipped envoy/envoy.yaml: the docker-compose service
// names, Envoy's usual ports, a 4 MiB body limit and a 500 ms message timeout (ten
// times the limiter's default 50 ms decision deadline).
func Defaults() Params {
	return Params{
		AdminAddress:     "127.0.0.1",
		AdminPort:        9901,
		ListenAddress:    "0.0.0.0",
		ListenPort:       10000,
		Upstream:         []Endpoint{{Host: "mcp-server", Port: 8080}},
		ExtProc:          []Endpoint{{Host: "extproc", Port: 50051}},
		BufferLimitBytes: DefaultBufferLimitBytes,
		MessageTimeout:   500 * time.Millisecond,
	}
}

// templateData is what the template sees: Params with the duration in Envoy's form
// and the jwt_authn strings quoted for YAML.
type templateData struct {
	Params
	MessageTimeout       string
	JWTIssuer            string
	JWKS                 string
	JWTPayloadInMetadata string
	// TLS is ExtProcTLS with every string quoted for YAML; nil without it.
	TLS *ExtProcTLS
}

// Render returns the Envoy bootstrap YAML for p.
func Render(p Params) ([]byte, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	data := templateData{Params: p, MessageTimeout: envoyDuration(p.MessageTimeout)}
	if j := p.JWTAuthn; j != nil {
		name := j.PayloadInMetadata
		if name == "" {
			name = "jwt_payload"
		}
		data.JWTIssuer, data.JWKS, data.JWTPayloadInMetadata = yamlString(j.Issuer), yamlString(j.JWKS), yamlString(name)
	}
	if t := p.ExtProcTLS; t != nil {
		data.TLS = &ExtProcTLS{SNI: yamlString(t.SNI), TrustedCA: yamlString(t.TrustedCA)}
		if t.ClientCert != "" {
			data.TLS.ClientCert, data.TLS.ClientKey = yamlString(t.ClientCert), yamlString(t.ClientKey)
		}
	}
	if err := tmpl.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("render envoy.yaml: %w", err)
	}
	return buf.Bytes(), nil
}

func (p Params) validate() error {
	var errs []error
	if len(p.Upstream) == 0 {
		errs = append(errs, errors.New("envoyconfig: Upstream: at least one endpoint is needed"))
	}
	if len(p.ExtProc) == 0 {
		errs = append(errs, errors.New("envoyconfig: ExtProc: at least one endpoint is needed"))
	}
	if p.BufferLimitBytes <= 0 {
		errs = append(errs, fmt.Errorf("envoyconfig: BufferLimitBytes: got %d, want > 0", p.BufferLimitBytes))
	}
	if p.MessageTimeout < time.Millisecond || p.MessageTimeout%time.Millisecond != 0 {
		errs = append(errs, fmt.Errorf("envoyconfig: MessageTimeout: got %v, want whole milliseconds > 0", p.MessageTimeout))
	}
	if j := p.JWTAuthn; j != nil {
		if j.Issuer == "" {
			errs = append(errs, errors.New("envoyconfig: JWTAuthn.Issuer: empty"))
		}
		if !json.Valid([]byte(j.JWKS)) {
			errs = append(errs, errors.New("envoyconfig: JWTAuthn.JWKS: want a JSON Web Key Set"))
		}
	}
	if t := p.ExtProcTLS; t != nil {
		if t.SNI == "" {
			errs = append(errs, errors.New("envoyconfig: ExtProcTLS.SNI: empty"))
		}
		if t.TrustedCA == "" {
			errs = append(errs, errors.New("envoyconfig: ExtProcTLS.TrustedCA: empty"))
		}
		if (t.ClientCert == "") != (t.ClientKey == "") {
			errs = append(errs, errors.New("envoyconfig: ExtProcTLS.ClientCert and ClientKey: set both or neither"))
		}
	}
	return errors.Join(errs...)
}

// yamlString quotes s as a YAML double-quoted scalar: JSON's string escapes are a
// subset of YAML's, so any string (a whole JWKS document included) stays one value.
func yamlString(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}

// envoyDuration formats d as a protobuf JSON duration ("0.500s").
func envoyDuration(d time.Duration) string {
	return fmt.Sprintf("%d.%03ds", d/time.Second, (d%time.Second)/time.Millisecond)
}
