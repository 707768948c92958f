package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/mcp-ratelimit/extproc/internal/tlsreload"
)

// loadGRPCTLS reads --grpc-tls-cert, --grpc-tls-key and --grpc-client-ca; nil
// without them (plaintext). An error names the flag of the file at fault.
func loadGRPCTLS(o options, log *slog.Logger) (*tlsreload.Server, error) {
	if o.grpcTLSCert == "" {
		return nil, nil
	}
	s, err := tlsreload.Load(tlsreload.Files{Cert: o.grpcTLSCert, Key: o.grpcTLSKey, ClientCA: o.grpcClientCA})
	if err != nil {
		var fe *tlsreload.FileError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("gRPC TLS: --%s: %w", tlsFlag[fe.Part], err)
		}
		return nil, fmt.Errorf("gRPC TLS: %w", err)
	}
	leaf := s.Leaf()
	log.Info("gRPC listener speaks TLS",
		"mutual", o.grpcClientCA != "", "subject", leaf.Subject.String(),
		"serial", fmt.Sprintf("%x", leaf.SerialNumber), "not_after", leaf.NotAfter.UTC())
	return s, nil
}

// tlsFlag is the flag that names each TLS file.
var tlsFlag = map[tlsreload.Part]string{
	tlsreload.PartCert:     "grpc-tls-cert",
	tlsreload.PartKey:      "grpc-tls-key",
	tlsreload.PartClientCA: "grpc-client-ca",
}
