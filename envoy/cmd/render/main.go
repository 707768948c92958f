// Command render writes the shipped Envoy configuration (envoy/envoy.yaml.tmpl)
// rendered for other addresses, so that a local run uses the same configuration as
// the shipped envoy/envoy.yaml rather than a hand-edited copy of it.
//
//	go run ./envoy/cmd/render --listen 127.0.0.1:10000 --admin 127.0.0.1:9901 \
//	    --upstream 127.0.0.1:8080 --extproc 127.0.0.1:50051 > envoy.yaml
//
// Port 0 lets Envoy pick a free port; its admin /listeners then says which.
// Unset flags keep the values of envoy/envoy.yaml.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	envoyconfig "github.com/mcp-ratelimit/extproc/envoy"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "render:", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	p := envoyconfig.Defaults()
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", net.JoinHostPort(p.ListenAddress, strconv.Itoa(p.ListenPort)), "where MCP clients connect: host:port")
	admin := fs.String("admin", net.JoinHostPort(p.AdminAddress, strconv.Itoa(p.AdminPort)), "Envoy's admin listener: host:port")
	var upstream, extproc endpoints
	fs.Var(&upstream, "upstream", "an MCP server endpoint, host:port; repeat for several (default mcp-server:8080)")
	fs.Var(&extproc, "extproc", "an extproc gRPC endpoint, host:port; repeat for several (default extproc:50051)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if p.ListenAddress, p.ListenPort, err = hostPort(*listen); err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if p.AdminAddress, p.AdminPort, err = hostPort(*admin); err != nil {
		return fmt.Errorf("--admin: %w", err)
	}
	if len(upstream) > 0 {
		p.Upstream = upstream
	}
	if len(extproc) > 0 {
		p.ExtProc = extproc
	}
	out, err := envoyconfig.Render(p)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// endpoints is a repeatable host:port flag.
type endpoints []envoyconfig.Endpoint

func (e *endpoints) String() string {
	s := make([]string, len(*e))
	for i, ep := range *e {
		s[i] = net.JoinHostPort(ep.Host, strconv.Itoa(ep.Port))
	}
	return strings.Join(s, ",")
}

func (e *endpoints) Set(v string) error {
	host, port, err := hostPort(v)
	if err != nil {
		return err
	}
	if port == 0 {
		// Envoy would connect to port 0: refuse it here, where the mistake is.
		return errors.New("port 0: want the port the endpoint listens on")
	}
	*e = append(*e, envoyconfig.Endpoint{Host: host, Port: port})
	return nil
}

func hostPort(v string) (string, int, error) {
	host, p, err := net.SplitHostPort(v)
	if err != nil {
		return "", 0, err
	}
	if host == "" {
		return "", 0, fmt.Errorf("%q: want a host before the port", v)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: want a port from 0 to 65535", v)
	}
	return host, port, nil
}
