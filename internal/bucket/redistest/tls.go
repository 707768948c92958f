package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLSServer is a redis-server speaking only TLS.
type TLSServer struct {
	*Server
	// CAFile is the PEM certificate of the test CA that signed the server's
	// certificate (valid for 127.0.0.1 and localhost) and the client's.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate signed by the CA and
	// its key, accepted by the server.
	CertFile, KeyFile string
}

// StartTLS starts a redis-server listening with TLS only, its certificates
// generated for the test by a fresh CA. With requireClientCert the server
// refuses clients without a certificate signed by that CA (tls-auth-clients
// yes); otherwise it asks for none.
func StartTLS(tb testing.TB, requireClientCert bool) *TLSServer {
	tb.Helper()
	dir := tb.TempDir()
	ca, err := NewCA("redistest CA")
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	serverCert, serverKey := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	clientCert, clientKey := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	for _, err := range []error{
		ca.WriteCert(caFile),
		ca.Issue("127.0.0.1", x509.ExtKeyUsageServerAuth, serverCert, serverKey),
		ca.Issue("redistest client", x509.ExtKeyUsageClientAuth, clientCert, clientKey),
	} {
		if err != nil {
			tb.Fatalf("redistest: %v", err)
		}
	}

	authClients := "no"
	probeTLS := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	if requireClientCert {
		authClients = "yes"
		cert, err := tls.LoadX509KeyPair(clientCert, clientKey)
		if err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		probeTLS.Certificates = []tls.Certificate{cert}
	}
	s := startServer(tb, serverConfig{
		args: []string{
			"--tls-cert-file", serverCert,
			"--tls-key-file", serverKey,
			"--tls-ca-cert-file", caFile,
			"--tls-auth-clients", authClients,
		},
		tls:   true,
		probe: probe{tls: probeTLS},
	})
	return &TLSServer{Server: s, CAFile: caFile, CertFile: clientCert, KeyFile: clientKey}
}

// CA is a certificate authority made up for a test.
type CA struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

// NewCA returns a fresh self-signed CA, valid for a day.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{cert: cert, der: der, key: key}, nil
}

// Pool is a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// WriteCert writes the CA's certificate as PEM to path.
func (ca *CA) WriteCert(path string) error {
	return writePEM(path, "CERTIFICATE", ca.der)
}

// Issue writes to certFile and keyFile a certificate signed by the CA for usage,
// with name as common name and, for a server, as its only IP address or DNS name
// (plus localhost).
func (ca *CA) Issue(name string, usage x509.ExtKeyUsage, certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key for %s: %w", name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.DNSNames = []string{"localhost"}
		if ip := net.ParseIP(name); ip != nil {
			tmpl.IPAddresses = []net.IP{ip}
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, name)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return fmt.Errorf("create certificate for %s: %w", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key for %s: %w", name, err)
	}
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return err
	}
	return writePEM(keyFile, "PRIVATE KEY", keyDER)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on Linux; a constant serial still works for
		// certificates that are never revoked.
		return big.NewInt(1)
	}
	return n
}

func writePEM(path, typ string, der []byte) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
