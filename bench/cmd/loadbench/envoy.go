package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mcp-ratelimit/extproc/test/integration/harness"
)

// envoy is one running Envoy.
type envoy struct {
	*proc
	listen, admin string
}

func (r *runner) startEnvoy(ctx context.Context, name string, p envoyParams) (*envoy, error) {
	var err error
	if p.ListenPort, err = freePort(); err != nil {
		return nil, err
	}
	if p.AdminPort, err = freePort(); err != nil {
		return nil, err
	}
	p.UpstreamPort = r.upstreamPort
	cfg, err := renderEnvoy(p)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(r.dir, "envoy-"+name+".yaml")
	if err := os.WriteFile(path, cfg, 0o644); err != nil {
		return nil, err
	}
	pr, err := startProc(r.dir, "envoy-"+name, r.envoyBin, "-c", path, "--disable-hot-restart",
		"--concurrency", strconv.Itoa(r.f.envoyConcurrency), "--log-level", "warning")
	if err != nil {
		return nil, err
	}
	e := &envoy{proc: pr, listen: loopback(p.ListenPort), admin: loopback(p.AdminPort)}
	if err := pr.waitReady(ctx, func(ctx context.Context) error { return harness.HTTPOK(ctx, "http://"+e.admin+"/ready") }); err != nil {
		_ = pr.stop()
		return nil, err
	}
	return e, nil
}

// counters returns Envoy's counters whose names contain filter.
func (e *envoy) counters(ctx context.Context, filter string) (map[string]int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.admin+"/stats?usedonly&filter="+url.QueryEscape(filter), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("envoy stats: %w", err)
	}
	defer resp.Body.Close()
	return parseEnvoyStats(resp.Body)
}

// parseEnvoyStats reads Envoy's text /stats ("name: value" lines); histograms,
// which are not integers, are left out.
func parseEnvoyStats(r io.Reader) (map[string]int64, error) {
	out := map[string]int64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			out[name] = n
		}
	}
	return out, sc.Err()
}
