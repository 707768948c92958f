package config

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	yaml "go.yaml.in/yaml/v3"
)

// redis reads the redis: block: one store for every server.
func (w *walker) redis(n *yaml.Node, path string) Redis {
	r := Redis{Timeout: DefaultRedisTimeout}
	f, ok := w.fields(n, path, redisKeys, nil)
	if !ok {
		return r
	}
	// url, sentinel and cluster each pick a different client; two would leave one
	// silently ignored.
	var firstTarget string
	var firstLine int
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if x, ok := f[k.Value]; !ok || x.key != k || (k.Value != "url" && k.Value != "sentinel" && k.Value != "cluster") {
			continue
		}
		if firstTarget == "" {
			firstTarget, firstLine = k.Value, k.Line
			continue
		}
		w.addf(k, join(path, k.Value), "cannot be used together with %s.%s (line %d); choose one", path, firstTarget, firstLine)
	}

	var scheme string
	var urlPassword bool
	if x, ok := f["url"]; ok {
		p := join(path, "url")
		if s, ok := w.str(x.val, p); ok {
			scheme, urlPassword, ok = w.redisURL(x.val, p, s)
			if ok {
				r.URL = s
			}
		}
	}
	if x, ok := f["username"]; ok {
		if s, ok := w.str(x.val, join(path, "username")); ok {
			r.Username = s
		}
	}
	if x, ok := f["password"]; ok {
		p := join(path, "password")
		if s, ok := w.str(x.val, p); ok {
			if urlPassword {
				w.addf(x.val, p, "the url already holds a password; set it in one place")
			} else {
				r.Password = s
			}
		}
	}
	if x, ok := f["timeout"]; ok {
		if d, ok := w.duration(x.val, join(path, "timeout"), time.Millisecond, 10*time.Second, "10s"); ok {
			r.Timeout = d
		}
	}
	if x, ok := f["sentinel"]; ok {
		p := join(path, "sentinel")
		if sf, ok := w.fields(x.val, p, sentinelKeys, nil); ok {
			s := &Sentinel{}
			if m, ok := sf["masterName"]; ok {
				if v, ok := w.str(m.val, join(p, "masterName")); ok {
					if v == "" {
						w.addf(m.val, join(p, "masterName"), "must not be empty")
					}
					s.MasterName = v
				}
			} else {
				w.missing(x.val, p, "masterName", "sentinel needs masterName and addrs")
			}
			s.Addrs = w.addrs(sf, x.val, p)
			if u, ok := sf["username"]; ok {
				if v, ok := w.str(u.val, join(p, "username")); ok {
					s.Username = v
				}
			}
			if pw, ok := sf["password"]; ok {
				if v, ok := w.str(pw.val, join(p, "password")); ok {
					s.Password = v
				}
			}
			r.Sentinel = s
		}
	}
	if x, ok := f["cluster"]; ok {
		p := join(path, "cluster")
		if cf, ok := w.fields(x.val, p, clusterKeys, nil); ok {
			r.Cluster = &Cluster{Addrs: w.addrs(cf, x.val, p)}
		}
	}
	if x, ok := f["tls"]; ok {
		p := join(path, "tls")
		if scheme == "redis" || scheme == "unix" {
			w.addf(x.key, p, "needs a rediss:// url (%s:// is plaintext)", scheme)
		}
		if tf, ok := w.fields(x.val, p, tlsKeys, nil); ok {
			t := &TLS{}
			file := func(key string, dst *string) {
				if y, ok := tf[key]; ok {
					if s, ok := w.str(y.val, join(p, key)); ok {
						if s == "" {
							w.addf(y.val, join(p, key), "must not be empty")
						}
						*dst = s
					}
				}
			}
			file("caFile", &t.CAFile)
			file("certFile", &t.CertFile)
			file("keyFile", &t.KeyFile)
			file("serverName", &t.ServerName)
			if y, ok := tf["insecureSkipVerify"]; ok {
				t.InsecureSkipVerify, _ = w.boolean(y.val, join(p, "insecureSkipVerify"))
			}
			// A client certificate is a pair: one without the other fails at the
			// first connection, long after the config was accepted.
			if _, cert := tf["certFile"]; cert != (tf["keyFile"].key != nil) {
				w.addf(x.val, p, "certFile and keyFile go together: set both or neither")
			}
			r.TLS = t
		}
	}
	return r
}

// redisURL checks a redis url. Messages never echo the url: it may hold a password.
func (w *walker) redisURL(n *yaml.Node, path, s string) (scheme string, hasPassword, ok bool) {
	u, err := url.Parse(s)
	if err != nil {
		w.addf(n, path, "is not a valid URL")
		return "", false, false
	}
	_, hasPassword = u.User.Password()
	switch u.Scheme {
	case "redis", "rediss":
		if u.Hostname() == "" {
			w.addf(n, path, "must name a host, e.g. redis://redis:6379/0")
			return u.Scheme, hasPassword, false
		}
		if p := u.Port(); p != "" {
			if v, err := strconv.Atoi(p); err != nil || v < 1 || v > 65535 {
				w.addf(n, path, "port must be from 1 to 65535, got %q", p)
				return u.Scheme, hasPassword, false
			}
		}
	case "unix":
		if u.Path == "" {
			w.addf(n, path, "must name a socket path, e.g. unix:///run/redis.sock")
			return u.Scheme, hasPassword, false
		}
	default:
		w.addf(n, path, "scheme must be redis://, rediss:// or unix://, got %q", u.Scheme)
		return u.Scheme, hasPassword, false
	}
	// Let the client library have the last word (database number, query options),
	// so that an accepted url is one the store can use.
	if _, err := redis.ParseURL(s); err != nil {
		w.addf(n, path, "%s", strings.TrimPrefix(err.Error(), "redis: "))
		return u.Scheme, hasPassword, false
	}
	return u.Scheme, hasPassword, true
}

// addrs reads a required, non-empty list of host:port addresses.
func (w *walker) addrs(f map[string]field, parent *yaml.Node, path string) []string {
	p := join(path, "addrs")
	x, ok := f["addrs"]
	if !ok {
		w.missing(parent, path, "addrs", "list at least one host:port")
		return nil
	}
	items, ok := w.list(x.val, p)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		w.addf(x.val, p, "must list at least one host:port")
	}
	var out []string
	for i, item := range items {
		ip := index(p, i)
		s, ok := w.str(item, ip)
		if !ok {
			continue
		}
		host, port, err := net.SplitHostPort(s)
		v, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || v < 1 || v > 65535 {
			w.addf(item, ip, "must be host:port, got %q", s)
			continue
		}
		out = append(out, s)
	}
	return out
}
