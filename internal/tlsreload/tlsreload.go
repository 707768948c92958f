// Package tlsreload serves TLS from PEM files that are replaced while the server
// runs: Kubernetes Secret volumes swap a ..data symlink under the mounted names,
// and cert-manager renews certificates long before the pods restart. Load reads
// and checks the files once; Watch re-reads them when their content changes, and
// every new handshake uses what was last loaded without error.
package tlsreload

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// Files name the PEM files of a server's TLS identity.
type Files struct {
	// Cert is the certificate chain the server presents, leaf first; required.
	Cert string
	// Key is the private key of Cert's leaf; required.
	Key string
	// ClientCA, when set, holds the CA certificates that clients' certificates
	// must chain to, and a client without such a certificate is refused (mutual
	// TLS). Empty: clients are not asked for a certificate.
	ClientCA string
}

// Part says which of the Files a FileError is about.
type Part int

const (
	PartCert     Part = iota // Files.Cert
	PartKey                  // Files.Key, or a key that is not Cert's
	PartClientCA             // Files.ClientCA
)

func (p Part) String() string {
	switch p {
	case PartCert:
		return "certificate"
	case PartKey:
		return "private key"
	default:
		return "client CA"
	}
}

// FileError is a file of Files that cannot be read or does not hold what it
// should.
type FileError struct {
	Part Part
	Path string
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("%s %s: %v", e.Part, e.Path, e.Err) }
func (e *FileError) Unwrap() error { return e.Err }

// Server holds the TLS configuration new handshakes get. Its methods are safe
// for concurrent use; Watch runs in one goroutine at most.
type Server struct {
	files   Files
	current atomic.Pointer[tls.Config]
	// last is the hash of the content last loaded or rejected, pending a new
	// content seen once (see Watch). Only Watch and Load touch them.
	last, pending [sha256.Size]byte
}

// Load reads and checks the files. An error about one of them is a *FileError
// naming it.
func Load(f Files) (*Server, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("tlsreload: Files.Cert and Files.Key are both required")
	}
	s := &Server{files: f}
	c, err := s.read()
	if err != nil {
		return nil, err
	}
	cfg, err := c.parse(f)
	if err != nil {
		return nil, err
	}
	s.current.Store(cfg)
	s.last = c.hash()
	return s, nil
}

// Config is the configuration to serve with (grpc credentials.NewTLS takes it,
// adding ALPN h2): each handshake takes the certificate and client CAs last
// loaded, so a connection keeps the certificate it started with while new ones
// get the new one.
func (s *Server) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current.Load(), nil
		},
	}
}

// Leaf is the certificate new handshakes present.
func (s *Server) Leaf() *x509.Certificate {
	return s.current.Load().Certificates[0].Leaf
}

// Reload reads the files now. On an error the configuration in force stays.
func (s *Server) Reload() error {
	c, err := s.read()
	if err != nil {
		return err
	}
	return s.apply(c)
}

// WatchOptions configure Watch.
type WatchOptions struct {
	// Interval is how often the files are read; zero means 2 s.
	Interval time.Duration
	// Logger reports each reload; nil: slog.Default().
	Logger *slog.Logger
}

// Watch re-reads the files every Interval until ctx is done, and loads them when
// their content changed and was the same on two reads in a row: a renewal
// written in place (the certificate, then the key) is thus seldom caught half
// done, and if it is, the mismatched pair is refused and the next read loads
// the finished one. Reading content, not watching inodes, also sees a Secret
// volume's ..data symlink swap, which leaves the mounted names untouched. A
// content that fails to load is logged as a warning and the configuration in
// force stays.
func (s *Server) Watch(ctx context.Context, o WatchOptions) {
	if o.Interval <= 0 {
		o.Interval = 2 * time.Second
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c, err := s.read()
		var h [sha256.Size]byte
		if err == nil {
			h = c.hash()
		}
		// A file that cannot be read hashes as all zeros: its return is a change.
		switch {
		case h == s.last:
			continue
		case h != s.pending:
			s.pending = h
			continue
		}
		s.last = h
		if err == nil {
			err = s.apply(c)
		}
		if err != nil {
			log.Warn("TLS reload failed; new connections keep the certificate in force",
				"error", err, "serving", describe(s.Leaf()))
			continue
		}
		log.Info("TLS certificate reloaded", "serving", describe(s.Leaf()))
	}
}

// describe names a certificate in logs: subject, serial and expiry.
func describe(c *x509.Certificate) string {
	return fmt.Sprintf("%s serial %x, valid until %s", c.Subject, c.SerialNumber, c.NotAfter.UTC().Format(time.RFC3339))
}

// contents are the files' bytes, read together so that what is checked and
// hashed is what gets loaded.
type contents struct{ cert, key, clientCA []byte }

func (s *Server) read() (contents, error) {
	var c contents
	var err error
	if c.cert, err = os.ReadFile(s.files.Cert); err != nil {
		return c, &FileError{PartCert, s.files.Cert, err}
	}
	if c.key, err = os.ReadFile(s.files.Key); err != nil {
		return c, &FileError{PartKey, s.files.Key, err}
	}
	if s.files.ClientCA != "" {
		if c.clientCA, err = os.ReadFile(s.files.ClientCA); err != nil {
			return c, &FileError{PartClientCA, s.files.ClientCA, err}
		}
	}
	return c, nil
}

func (c contents) hash() [sha256.Size]byte {
	h := sha256.New()
	for _, b := range [][]byte{c.cert, c.key, c.clientCA} {
		// Length-prefixed, so that bytes moving from one file to the next
		// still change the hash.
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

func (s *Server) apply(c contents) error {
	cfg, err := c.parse(s.files)
	if err != nil {
		return err
	}
	s.current.Store(cfg)
	return nil
}

// parse checks the contents and builds the configuration of the handshakes
// that will use them.
func (c contents) parse(f Files) (*tls.Config, error) {
	// The certificate is checked on its own first, so that a broken one is
	// reported as such rather than as a key that does not match it.
	if err := checkCerts(c.cert); err != nil {
		return nil, &FileError{PartCert, f.Cert, err}
	}
	pair, err := tls.X509KeyPair(c.cert, c.key)
	if err != nil {
		return nil, &FileError{PartKey, f.Key, fmt.Errorf("not the private key of the certificate in %s: %w", f.Cert, err)}
	}
	cfg := &tls.Config{
		// TLS 1.3 is chosen whenever the client offers it; 1.2 is the floor
		// HTTP/2 allows.
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		// Returned by GetConfigForClient, this configuration is the whole
		// handshake's: without h2 here ALPN would fail. grpc credentials add it
		// too; saying it keeps the configuration right on its own.
		NextProtos: []string{"h2"},
	}
	if f.ClientCA != "" {
		pool, err := caPool(c.clientCA)
		if err != nil {
			return nil, &FileError{PartClientCA, f.ClientCA, err}
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		// Resumed sessions stay safe across a CA rotation: crypto/tls checks that
		// the session's client chain is still rooted in this pool.
		cfg.ClientCAs = pool
	}
	return cfg, nil
}

// checkCerts wants at least one certificate, each of which parses.
func checkCerts(b []byte) error {
	n := 0
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM CERTIFICATE block")
	}
	return nil
}

// caPool is the pool of the CERTIFICATE blocks of b; it wants at least one.
func caPool(b []byte) (*x509.CertPool, error) {
	if err := checkCerts(b); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	return pool, nil
}
