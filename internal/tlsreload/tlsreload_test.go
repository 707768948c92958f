package tlsreload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mcp-ratelimit/extproc/internal/tlsreload/tlstest"
)

// serverName is the name the test server certificates carry and clients ask for.
const serverName = "extproc.test"

// identity is one server identity in a Secret volume: tls.crt, tls.key and, for
// mutual TLS, ca.crt.
type identity struct {
	server   tlstest.Leaf
	clientCA *tlstest.CA // nil: no ca.crt
}

func (id identity) files() map[string][]byte {
	m := map[string][]byte{"tls.crt": id.server.CertPEM, "tls.key": id.server.KeyPEM}
	if id.clientCA != nil {
		m["ca.crt"] = id.clientCA.PEM
	}
	return m
}

// mount writes id as a Secret volume and returns the Files that name it.
func mount(t *testing.T, id identity) (*tlstest.SecretDir, Files) {
	t.Helper()
	d := tlstest.NewSecretDir(t, id.files())
	f := Files{Cert: d.Path("tls.crt"), Key: d.Path("tls.key")}
	if id.clientCA != nil {
		f.ClientCA = d.Path("ca.crt")
	}
	return d, f
}

func mustLoad(t *testing.T, f Files) *Server {
	t.Helper()
	s, err := Load(f)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

// clientConfig trusts serverCA and presents cert, if any.
func clientConfig(t *testing.T, serverCA *tlstest.CA, cert *tlstest.Leaf) *tls.Config {
	c := &tls.Config{RootCAs: serverCA.Pool(), ServerName: serverName, NextProtos: []string{"h2"}}
	if cert != nil {
		c.Certificates = []tls.Certificate{cert.TLSCertificate(t)}
	}
	return c
}

// handshake runs one TLS handshake over loopback TCP. It returns the client's
// view of the connection, and an error if either side failed: with TLS 1.3 a
// refused client certificate fails only the server's side.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	serverErr := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer c.Close()
		serverErr <- tls.Server(c, server).HandshakeContext(ctx)
	}()
	d := tls.Dialer{Config: client}
	var state tls.ConnectionState
	c, err := d.DialContext(ctx, "tcp", lis.Addr().String())
	if err == nil {
		state = c.(*tls.Conn).ConnectionState()
		c.Close()
	}
	return state, errors.Join(err, <-serverErr)
}

// presented is the certificate the server showed in a successful handshake.
func presented(t *testing.T, s *Server, client *tls.Config) *x509.Certificate {
	t.Helper()
	st, err := handshake(t, s.Config(), client)
	if err != nil {
		t.Fatalf("handshake: got error %v, want success", err)
	}
	return st.PeerCertificates[0]
}

func TestMutualTLSAcceptsOnlyClientsWithACertificateFromTheClientCA(t *testing.T) {
	serverCA, clientCA, otherCA := tlstest.NewCA(t, "server CA"), tlstest.NewCA(t, "client CA"), tlstest.NewCA(t, "other CA")
	_, f := mount(t, identity{server: serverCA.Server(t, serverName), clientCA: clientCA})
	s := mustLoad(t, f)
	good, foreign := clientCA.Client(t, "envoy"), otherCA.Client(t, "intruder")
	tests := []struct {
		name   string
		cert   *tlstest.Leaf
		wantOK bool
	}{
		{"certificate from the client CA", &good, true},
		{"no certificate", nil, false},
		{"certificate from another CA", &foreign, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := handshake(t, s.Config(), clientConfig(t, serverCA, tt.cert))
			if (err == nil) != tt.wantOK {
				t.Errorf("handshake: got error %v, want success %v", err, tt.wantOK)
			}
		})
	}
}

func TestWithoutAClientCAClientsNeedNoCertificate(t *testing.T) {
	serverCA := tlstest.NewCA(t, "server CA")
	_, f := mount(t, identity{server: serverCA.Server(t, serverName)})
	s := mustLoad(t, f)
	st, err := handshake(t, s.Config(), clientConfig(t, serverCA, nil))
	if err != nil {
		t.Fatalf("handshake without a client certificate: got error %v, want success", err)
	}
	if len(st.PeerCertificates) == 0 || st.PeerCertificates[0].SerialNumber.Cmp(s.Leaf().SerialNumber) != 0 {
		t.Errorf("presented certificate: got %v, want the loaded one", st.PeerCertificates)
	}
}

func TestHandshakesPreferTLS13AndRefuseBelowTLS12(t *testing.T) {
	serverCA := tlstest.NewCA(t, "server CA")
	_, f := mount(t, identity{server: serverCA.Server(t, serverName)})
	s := mustLoad(t, f)

	st, err := handshake(t, s.Config(), clientConfig(t, serverCA, nil))
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != "h2" {
		t.Errorf("got version %s, ALPN %q; want TLS 1.3, h2", tls.VersionName(st.Version), st.NegotiatedProtocol)
	}

	tls12 := clientConfig(t, serverCA, nil)
	tls12.MaxVersion = tls.VersionTLS12
	if st, err := handshake(t, s.Config(), tls12); err != nil || st.Version != tls.VersionTLS12 {
		t.Errorf("TLS 1.2 client: got version %s, error %v; want TLS 1.2", tls.VersionName(st.Version), err)
	}

	tls11 := clientConfig(t, serverCA, nil)
	tls11.MinVersion, tls11.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, err := handshake(t, s.Config(), tls11); err == nil {
		t.Error("TLS 1.1 client: got success, want the handshake refused")
	}
}

// logs is a slog handler that hands each record's message to the test.
type logs chan string

func (l logs) Enabled(context.Context, slog.Level) bool { return true }
func (l logs) Handle(_ context.Context, r slog.Record) error {
	l <- r.Message
	return nil
}
func (l logs) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l logs) WithGroup(string) slog.Handler      { return l }

// watch runs s.Watch until the test ends and returns its log messages.
func watch(t *testing.T, s *Server) logs {
	t.Helper()
	l := make(logs, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Watch(ctx, WatchOptions{Interval: 5 * time.Millisecond, Logger: slog.New(l)})
	}()
	t.Cleanup(func() {
		cancel()
		// Drained so that a record logged during cancellation cannot block Watch.
		for {
			select {
			case <-done:
				return
			case <-l:
			}
		}
	})
	return l
}

// next waits for Watch's next log message.
func (l logs) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-l:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("Watch logged nothing in 10 s")
		return ""
	}
}

func TestWatchServesARotatedCertificateToNewHandshakesOnly(t *testing.T) {
	serverCA, clientCA := tlstest.NewCA(t, "server CA"), tlstest.NewCA(t, "client CA")
	before := identity{server: serverCA.Server(t, serverName), clientCA: clientCA}
	d, f := mount(t, before)
	s := mustLoad(t, f)
	client := clientCA.Client(t, "envoy")
	cc := clientConfig(t, serverCA, &client)

	// A connection open across the rotation keeps the certificate it began with.
	open, err := tls.Dial("tcp", serve(t, s), cc)
	if err != nil {
		t.Fatalf("dial before the rotation: %v", err)
	}
	defer open.Close()

	msgs := watch(t, s)
	after := identity{server: serverCA.Server(t, serverName), clientCA: clientCA}
	d.Update(after.files())
	if m := msgs.next(t); m != "TLS certificate reloaded" {
		t.Fatalf("Watch logged %q, want a reload", m)
	}
	if got, want := presented(t, s, cc).SerialNumber, after.server.Cert.SerialNumber; got.Cmp(want) != 0 {
		t.Errorf("new handshake presented serial %x, want the rotated certificate's %x", got, want)
	}
	if got, want := open.ConnectionState().PeerCertificates[0].SerialNumber, before.server.Cert.SerialNumber; got.Cmp(want) != 0 {
		t.Errorf("open connection: got serial %x, want the original %x", got, want)
	}
	if _, err := open.Write([]byte("still here")); err != nil {
		t.Errorf("open connection after the rotation: %v", err)
	}
}

// serve accepts TLS connections with s until the test ends, completing each
// handshake and holding the connection open; it returns the address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", s.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// Reads until the client goes: the handshake runs on the first read.
				buf := make([]byte, 64)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return lis.Addr().String()
}

func TestWatchAppliesARotatedClientCA(t *testing.T) {
	serverCA, oldCA, newCA := tlstest.NewCA(t, "server CA"), tlstest.NewCA(t, "old client CA"), tlstest.NewCA(t, "new client CA")
	server := serverCA.Server(t, serverName)
	d, f := mount(t, identity{server: server, clientCA: oldCA})
	s := mustLoad(t, f)
	oldClient, newClient := oldCA.Client(t, "old"), newCA.Client(t, "new")

	msgs := watch(t, s)
	d.Update(identity{server: server, clientCA: newCA}.files())
	if m := msgs.next(t); m != "TLS certificate reloaded" {
		t.Fatalf("Watch logged %q, want a reload", m)
	}
	if _, err := handshake(t, s.Config(), clientConfig(t, serverCA, &newClient)); err != nil {
		t.Errorf("client of the new CA: got error %v, want success", err)
	}
	if _, err := handshake(t, s.Config(), clientConfig(t, serverCA, &oldClient)); err == nil {
		t.Error("client of the removed CA: got success, want the handshake refused")
	}
}

func TestAFailedReloadKeepsTheCertificateInForce(t *testing.T) {
	serverCA := tlstest.NewCA(t, "server CA")
	first, second, third := serverCA.Server(t, serverName), serverCA.Server(t, serverName), serverCA.Server(t, serverName)
	d, f := mount(t, identity{server: first})
	s := mustLoad(t, f)
	cc := clientConfig(t, serverCA, nil)

	// The second certificate with the first one's key: a renewal caught half
	// written.
	mismatched := map[string][]byte{"tls.crt": second.CertPEM, "tls.key": first.KeyPEM}
	d.Update(mismatched)
	var fe *FileError
	if err := s.Reload(); !errors.As(err, &fe) || fe.Part != PartKey {
		t.Fatalf("Reload of a mismatched pair: got error %v, want a FileError about the key", err)
	}
	if got := presented(t, s, cc).SerialNumber; got.Cmp(first.Cert.SerialNumber) != 0 {
		t.Errorf("after a failed Reload: presented serial %x, want the first certificate's %x", got, first.Cert.SerialNumber)
	}

	// Watch sees the same content as new (Load read the first pair), refuses it
	// with a warning, then loads the next good pair.
	msgs := watch(t, s)
	if m := msgs.next(t); m != "TLS reload failed; new connections keep the certificate in force" {
		t.Fatalf("Watch logged %q, want the failed reload", m)
	}
	if got := presented(t, s, cc).SerialNumber; got.Cmp(first.Cert.SerialNumber) != 0 {
		t.Errorf("after a failed watch reload: presented serial %x, want the first certificate's %x", got, first.Cert.SerialNumber)
	}
	d.Update(identity{server: third}.files())
	if m := msgs.next(t); m != "TLS certificate reloaded" {
		t.Fatalf("Watch logged %q, want a reload", m)
	}
	if got := presented(t, s, cc).SerialNumber; got.Cmp(third.Cert.SerialNumber) != 0 {
		t.Errorf("after the good pair: presented serial %x, want %x", got, third.Cert.SerialNumber)
	}
}

func TestLoadNamesTheFileAtFault(t *testing.T) {
	ca := tlstest.NewCA(t, "CA")
	server, other := ca.Server(t, serverName), ca.Server(t, serverName)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key, caFile := write("cert.pem", server.CertPEM), write("key.pem", server.KeyPEM), write("ca.pem", ca.PEM)
	garbage, missing := write("garbage.pem", []byte("not PEM\n")), filepath.Join(dir, "missing.pem")
	tests := []struct {
		name  string
		files Files
		want  Part
	}{
		{"certificate file missing", Files{Cert: missing, Key: key}, PartCert},
		{"certificate file without a certificate", Files{Cert: garbage, Key: key}, PartCert},
		{"key given as the certificate", Files{Cert: key, Key: key}, PartCert},
		{"key file missing", Files{Cert: cert, Key: missing}, PartKey},
		{"key file without a key", Files{Cert: cert, Key: garbage}, PartKey},
		{"key of another certificate", Files{Cert: cert, Key: write("other-key.pem", other.KeyPEM)}, PartKey},
		{"client CA file missing", Files{Cert: cert, Key: key, ClientCA: missing}, PartClientCA},
		{"client CA file without a certificate", Files{Cert: cert, Key: key, ClientCA: garbage}, PartClientCA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.files)
			var fe *FileError
			if !errors.As(err, &fe) {
				t.Fatalf("got error %v, want a *FileError", err)
			}
			if fe.Part != tt.want {
				t.Errorf("got error about the %s (%v), want the %s", fe.Part, err, tt.want)
			}
		})
	}
	if _, err := Load(Files{Cert: cert, Key: key, ClientCA: caFile}); err != nil {
		t.Errorf("valid files: got error %v, want nil", err)
	}
}
