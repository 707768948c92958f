package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
)

// With no flags the output is the shipped file: the demo and the shipped
// configuration differ only in the addresses.
func TestNoFlagsRendersTheShippedFile(t *testing.T) {
	var out bytes.Buffer
	if err := run(nil, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("render with no flags differs from envoy/envoy.yaml")
	}
}

func TestFlagsReplaceTheAddresses(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{
		"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--upstream", "127.0.0.1:7001", "--extproc", "127.0.0.1:7002", "--extproc", "127.0.0.1:7003",
	}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{
		"{address: 127.0.0.1, port_value: 0}",
		"{address: 127.0.0.1, port_value: 7001}",
		"{address: 127.0.0.1, port_value: 7002}",
		"{address: 127.0.0.1, port_value: 7003}",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %s", want)
		}
	}
	for _, gone := range []string{"mcp-server", "extproc, port_value"} {
		if strings.Contains(s, gone) {
			t.Errorf("output still has %q", gone)
		}
	}
}

func TestBadFlagsAreErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "10000"}, "--listen: address 10000: missing port in address"},
		{[]string{"--admin", ":9901"}, `--admin: ":9901": want a host before the port`},
		{[]string{"--upstream", "127.0.0.1:0"}, "port 0: want the port the endpoint listens on"},
		{[]string{"--extproc", "127.0.0.1:99999"}, `"127.0.0.1:99999": want a port from 0 to 65535`},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		err := run(tt.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q): got error %v, want one containing %q", tt.args, err, tt.want)
		}
	}
}
