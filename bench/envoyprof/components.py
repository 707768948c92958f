#!/usr/bin/env python3
"""CPU per request of a stripped Envoy by component, from `perf script` call stacks.

Each sample is charged to the innermost frame whose function a vtable names
(envoysyms.py), classified by the class name below; buffers, stats, header maps and
the like are skipped so that they count for their caller. A second table says where
the CPU was (the leaf): Envoy's code, tcmalloc, libc or the kernel.

usage: components.py SYMS.pkl NAME=PERF_SCRIPT_TXT:ENVOY_MS_PER_REQUEST...
  the text is `perf script -F ip,sym,dso --no-demangle` of `perf record -g -p <envoy>`;
  the first NAME is the baseline the differences are taken against.
"""
import bisect
import collections
import pickle
import re
import sys

CATS = [
    ('ext_proc filter', r'ExternalProcessing'),
    ('ratelimit filter', r'RateLimitFilter|Common::RateLimit|service::ratelimit'),
    ('gRPC async client', r'^Envoy::Grpc::'),
    ('HTTP async client', r'Http::Async|AsyncClient'),
    ('protobuf messages', r'^envoy::|^google::protobuf|^xds::|^udpa::'),
    ('HTTP/2 codec', r'Http2|http2::'),
    ('HTTP/1 codec', r'Http1|Balsa'),
    ('router + upstream', r'Router::|Upstreams::Http|ConnPool|ConnectionPool|CodecClient'),
    ('HCM + filter manager', r'ConnectionManager|ActiveStream|FilterManager|Http::Active|HttpConnectionManager'),
    ('network + event loop', r'Network::|Event::|TransportSocket|Tls::'),
]
SKIP = r'Buffer::|Stats::|Logger::|ThreadLocal|^absl|^std::|HeaderMap|HeaderString|StreamInfo|Tracing'


def main():
    S = pickle.load(open(sys.argv[1], 'rb'))
    starts, ends, vt, dem = S['starts'], S['ends'], S['vt'], S['dem']
    mlo, mhi = S['malloc']
    cache = {}

    def cls(a):
        if a not in cache:
            i = bisect.bisect_right(starts, a) - 1
            r = None
            if i >= 0 and a < ends[i] and starts[i] in vt:
                r = sorted({dem[m] for m, k, o in vt[starts[i]]}, key=len)[0]
            cache[a] = r
        return cache[a]

    def component(stack):
        for a, dso in stack:
            if 'envoy' not in dso:
                continue
            c = cls(a)
            if not c or re.search(SKIP, c):
                continue
            for n, rx in CATS:
                if re.search(rx, c):
                    return n
            return 'other named classes'
        return 'no named frame'

    def leaf(a, dso):
        if 'kernel' in dso:
            return 'leaf: kernel'
        if 'envoy' in dso:
            return 'leaf: tcmalloc' if mlo <= a < mhi else "leaf: Envoy's code"
        return 'leaf: libc etc.'

    runs = []
    for arg in sys.argv[2:]:
        name, rest = arg.split('=', 1)
        path, ms = rest.rsplit(':', 1)
        comp, lf, n, st = collections.Counter(), collections.Counter(), 0, []
        for line in list(open(path)) + ['']:
            line = line.strip()
            if not line:
                if st:
                    n += 1
                    comp[component(st)] += 1
                    lf[leaf(*st[0])] += 1
                st = []
                continue
            p = line.split()
            try:
                st.append((int(p[0], 16), line[line.rfind('('):]))
            except ValueError:
                pass
        us = float(ms) * 1000
        runs.append((name, {k: v / n * us for k, v in (comp + lf).items()}, n))
    base = runs[0][1]
    keys = sorted({k for _, d, _ in runs for k in d}, key=lambda k: (k.startswith('leaf'), -runs[-1][1].get(k, 0)))
    names = [r[0] for r in runs]
    print('| µs/request | ' + ' | '.join(names) + ' | ' + ' | '.join('%s − %s' % (x, names[0]) for x in names[1:]) + ' |')
    print('|---|' + '--:|' * (2 * len(names) - 1))
    for k in keys:
        vals = [d.get(k, 0) for _, d, _ in runs]
        print('| %s | ' % k + ' | '.join('%.1f' % v for v in vals) + ' | ' +
              ' | '.join('%+.1f' % (v - base.get(k, 0)) for v in vals[1:]) + ' |')
    print('samples: ' + ', '.join('%s %d' % (n, c) for n, _, c in runs))


if __name__ == '__main__':
    main()
