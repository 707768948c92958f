package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/mcp-ratelimit/extproc/internal/bucket"
	"github.com/mcp-ratelimit/extproc/internal/config"
)

// run is the whole program but for process concerns (signals, exit codes):
// args are the arguments after the program name, getenv is the only way the
// environment is read, and ctx ends the server when it is done.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) > 0 {
		switch args[0] {
		case "check-config":
			return checkConfig(stdout, args[1:])
		case "version":
			if len(args) > 1 {
				return usageErrorf("version takes no arguments, got %q", args[1])
			}
			printVersion(stdout)
			return nil
		case "help":
			printUsage(stdout)
			return nil
		}
	}
	opts, err := parseFlags(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout)
		return nil
	}
	if err != nil {
		return err
	}
	log := newLogger(stderr, opts)
	bucket.RouteRedisLogs(log)
	return serve(ctx, opts, log)
}

func newLogger(w io.Writer, o options) *slog.Logger {
	ho := &slog.HandlerOptions{Level: o.logLevel}
	if o.logFormat == "text" {
		return slog.New(slog.NewTextHandler(w, ho))
	}
	return slog.New(slog.NewJSONHandler(w, ho))
}

// checkConfig validates one policy file. On success it prints "FILE: ok" and a
// one-line summary; on failure it returns a problemsError.
func checkConfig(stdout io.Writer, args []string) error {
	if len(args) != 1 {
		return usageErrorf("check-config takes exactly one FILE, got %d arguments", len(args))
	}
	file := args[0]
	p, err := config.Load(file)
	if err != nil {
		return problemsError{file, err}
	}
	fmt.Fprintf(stdout, "%s: ok\n%s\n", file, summary(p))
	return nil
}

// problemsError is a policy file's validation failure: its message holds every
// problem on its own line, prefixed by the file name as compilers do.
type problemsError struct {
	file string
	err  error // from config.Load
}

func (e problemsError) Error() string {
	lines := config.Problems(e.err)
	for i, l := range lines {
		lines[i] = e.file + ": " + l
	}
	return strings.Join(lines, "\n")
}

func (e problemsError) Unwrap() error { return e.err }

// summary describes a policy in one line, e.g.
// "2 servers: github (5 buckets), slack (2 buckets); store: redis", with
// a server's plans: "saas (12 buckets; plans free internal pro, default free)".
func summary(p *config.Policy) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s:", len(p.Servers), plural(len(p.Servers), "server"))
	for i, s := range p.Servers {
		if i > 0 {
			b.WriteString(",")
		}
		n := bucketCount(&s)
		fmt.Fprintf(&b, " %s (%d %s", s.Name, n, plural(n, "bucket"))
		if s.Plans != nil {
			names := slices.Sorted(maps.Keys(s.Plans.Limits))
			fmt.Fprintf(&b, "; %s %s", plural(len(names), "plan"), strings.Join(names, " "))
			if s.Plans.Default != "" {
				fmt.Fprintf(&b, ", default %s", s.Plans.Default)
			}
		}
		b.WriteString(")")
	}
	b.WriteString("; store: ")
	switch r := p.Redis; {
	case r.Sentinel != nil:
		b.WriteString("redis sentinel")
	case r.Cluster != nil:
		b.WriteString("redis cluster")
	case r.URL != "":
		b.WriteString("redis")
	default:
		b.WriteString("memory unless --redis-url is given")
	}
	return b.String()
}

// bucketCount counts the bucket definitions of a server (a perUser definition
// counts once, however many users it will hold).
func bucketCount(s *config.Server) int {
	n := 0
	for _, bs := range s.Slots() {
		n += len(bs)
	}
	return n
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// printVersion prints the -ldflags version, the Go version and, when the binary
// was built from a VCS checkout, the revision.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "extproc %s %s", version, runtime.Version())
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = " (modified)"
				}
			}
		}
		if rev != "" {
			fmt.Fprintf(w, " revision %s%s", rev, modified)
		}
	}
	fmt.Fprintln(w)
}
