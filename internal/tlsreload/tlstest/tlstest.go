// Package tlstest makes certificates for tests: a CA made up for the test, server
// and client certificates it signs, and a directory laid out and updated as the
// kubelet does a Secret volume.
package tlstest

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

// CA is a certificate authority made up for a test, valid for a day.
type CA struct {
	Cert *x509.Certificate
	// PEM is Cert as a PEM CERTIFICATE block: a client CA or trusted CA file.
	PEM []byte
	key *ecdsa.PrivateKey
}

// NewCA returns a fresh self-signed CA named name.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("tlstest: create CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("tlstest: parse CA certificate: %v", err)
	}
	return &CA{Cert: cert, PEM: pemBlock("CERTIFICATE", der), key: key}
}

// Pool holds the CA alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Leaf is a certificate the CA signed and its key.
type Leaf struct {
	Cert *x509.Certificate
	// CertPEM and KeyPEM are the certificate and its PKCS#8 key as PEM.
	CertPEM, KeyPEM []byte
}

// TLSCertificate is the leaf as crypto/tls presents it.
func (l Leaf) TLSCertificate(tb testing.TB) tls.Certificate {
	tb.Helper()
	c, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		tb.Fatalf("tlstest: %v", err)
	}
	return c
}

// Server issues a server certificate for names: IP addresses or DNS names.
func (ca *CA) Server(tb testing.TB, names ...string) Leaf {
	tb.Helper()
	tmpl := leafTemplate(tb, names[0], x509.ExtKeyUsageServerAuth)
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return ca.issue(tb, tmpl)
}

// Client issues a client certificate with common name name.
func (ca *CA) Client(tb testing.TB, name string) Leaf {
	tb.Helper()
	return ca.issue(tb, leafTemplate(tb, name, x509.ExtKeyUsageClientAuth))
}

func leafTemplate(tb testing.TB, name string, usage x509.ExtKeyUsage) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: serial(tb),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
}

func (ca *CA) issue(tb testing.TB, tmpl *x509.Certificate) Leaf {
	tb.Helper()
	key := newKey(tb)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatalf("tlstest: create certificate for %s: %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("tlstest: parse certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("tlstest: marshal key: %v", err)
	}
	return Leaf{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", keyDER)}
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("tlstest: generate key: %v", err)
	}
	return key
}

func serial(tb testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatalf("tlstest: serial: %v", err)
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// SecretDir lays out files as the kubelet mounts a Secret:
//
//	dir/tls.crt -> ..data/tls.crt
//	dir/..data  -> ..2026_01_02_03_04_05.000000001
//	dir/..2026_01_02_03_04_05.000000001/tls.crt
//
// and Update replaces them as its AtomicWriter does: a new timestamped
// directory, a new symlink renamed over ..data, the old directory removed. The
// mounted names never change and nothing is written to them.
type SecretDir struct {
	tb      testing.TB
	Dir     string
	current string // the timestamped directory ..data points at
	version int
}

// NewSecretDir mounts files (name to content) in a fresh temporary directory.
func NewSecretDir(tb testing.TB, files map[string][]byte) *SecretDir {
	tb.Helper()
	s := &SecretDir{tb: tb, Dir: tb.TempDir()}
	s.Update(files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(s.Dir, name)); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// Path is the mounted path of name.
func (s *SecretDir) Path(name string) string { return filepath.Join(s.Dir, name) }

// Update swaps in new contents for the same names, all at once.
func (s *SecretDir) Update(files map[string][]byte) {
	tb := s.tb
	tb.Helper()
	s.version++
	ts := fmt.Sprintf("..2026_01_02_03_04_05.%09d", s.version)
	if err := os.Mkdir(filepath.Join(s.Dir, ts), 0o755); err != nil {
		tb.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(s.Dir, ts, name), b, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	tmp := filepath.Join(s.Dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.Dir, "..data")); err != nil {
		tb.Fatal(err)
	}
	if s.current != "" {
		if err := os.RemoveAll(filepath.Join(s.Dir, s.current)); err != nil {
			tb.Fatal(err)
		}
	}
	s.current = ts
}
