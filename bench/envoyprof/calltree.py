#!/usr/bin/env python3
"""Inclusive costs per request in a callgrind dump of a stripped Envoy.

usage: calltree.py SYMS.pkl CALLGRIND_OUT REQUESTS FUNC_HEX [DEPTH] [MIN]
  prints FUNC's callees (inclusive instructions per request) to DEPTH levels.
usage: calltree.py SYMS.pkl CALLGRIND_OUT REQUESTS --top N [REGEX]
  prints the N named functions with the largest inclusive cost (class matching REGEX).
Callgrind names a function of the binary by its address; one in the google_malloc
section (tcmalloc), which valgrind does not map to the binary, by its load address:
valgrind loads a PIE at 0x108000.
"""
import bisect
import collections
import pickle
import re
import sys

VALGRIND_BASE = 0x108000


def namer(syms):
    S = pickle.load(open(syms, 'rb'))
    starts, vt, dem = S['starts'], S['vt'], S['dem']
    mlo, mhi = S['malloc']

    def lab(name):
        m = re.match(r'0x([0-9a-f]+)', name)
        if not m:
            return name
        a = int(m.group(1), 16)
        pre = ''
        if mlo + VALGRIND_BASE <= a < mhi + VALGRIND_BASE:
            a -= VALGRIND_BASE
            pre = 'tcmalloc:'
        i = bisect.bisect_right(starts, a) - 1
        f = starts[i] if i >= 0 else a
        l = vt.get(f)
        if l:
            cl = sorted({(dem[mm], k, o) for mm, k, o in l}, key=lambda x: (len(x[0]), x[0]))
            c, k, o = cl[0]
            return pre + '%#x %s::v%d%s%s' % (f, c[-90:], k, '@%d' % o if o else '',
                                             ' (+%d)' % (len(cl) - 1) if len(cl) > 1 else '')
        return pre + '%#x' % f
    return lab


def parse(path):
    names = {}
    selfc = collections.Counter()
    calls = collections.defaultdict(collections.Counter)
    ncalls = collections.defaultdict(collections.Counter)
    cur, pend = None, None
    for line in open(path):
        line = line.rstrip('\n')
        m = re.match(r'(c?fn)=\((\d+)\)(?: (.*))?$', line)
        if m:
            kind, i, n = m.groups()
            if n:
                names[i] = n
            if kind == 'fn':
                cur = i
            else:
                pend = [i, 0]
            continue
        m = re.match(r'calls=(\d+)', line)
        if m:
            pend[1] = int(m.group(1))
            continue
        m = re.match(r'(\S+) (\d+)$', line)
        if m and cur:
            v = int(m.group(2))
            if pend and pend[1]:
                calls[cur][pend[0]] += v
                ncalls[cur][pend[0]] += pend[1]
                pend = None
            else:
                selfc[cur] += v
    return names, selfc, calls, ncalls


def main():
    syms, path, N = sys.argv[1], sys.argv[2], float(sys.argv[3])
    lab = namer(syms)
    names, selfc, calls, ncalls = parse(path)
    if sys.argv[4] == '--top':
        top = int(sys.argv[5])
        rx = sys.argv[6] if len(sys.argv) > 6 else '::v'
        incl = collections.Counter()
        for i in names:
            if re.match(r'0x', names[i]):
                incl[lab(names[i])] = max(incl[lab(names[i])], selfc[i] + sum(calls[i].values()))
        for k, v in [kv for kv in incl.most_common() if re.search(rx, kv[0])][:top]:
            print('%9.0f  %s' % (v / N, k))
        return
    target = int(sys.argv[4], 16)
    depth = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    minv = float(sys.argv[6]) if len(sys.argv) > 6 else 500
    ids = [i for i, n in names.items() if re.match(r'0x0*%x$' % target, n)]

    def show(i, d, seen):
        if d > depth:
            return
        for c, v in calls[i].most_common():
            if v / N < minv:
                break
            print('  ' * d + '%8.0f  x%.2f  %s' % (v / N, ncalls[i][c] / N, lab(names.get(c, c))))
            if c not in seen:
                show(c, d + 1, seen | {c})
    for i in ids:
        print('%s: self %.0f, inclusive %.0f instructions per request' % (
            lab(names[i]), selfc[i] / N, (selfc[i] + sum(calls[i].values())) / N))
        show(i, 1, {i})


if __name__ == '__main__':
    main()
