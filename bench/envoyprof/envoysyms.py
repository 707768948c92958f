#!/usr/bin/env python3
"""Names functions of a stripped Envoy binary by the classes whose vtables list them.

Envoy's release binary has no symbol table, but it keeps .eh_frame (the bounds of
every function) and RTTI. A vtable is a run of R_X86_64_RELATIVE relocations: the
typeinfo pointer (whose name is a mangled class name) and then the virtual functions.
So every virtual method gets a name "Class::vN" (slot N of that vtable), which is
enough to tell which component a stack is in.

usage: envoysyms.py ENVOY_BINARY OUT.pkl
"""
import pickle
import re
import struct
import subprocess
import sys


def main(path, out):
    data = open(path, 'rb').read()
    e_shoff, = struct.unpack_from('<Q', data, 0x28)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from('<HHH', data, 0x3a)
    shs = [struct.unpack_from('<IIQQQQIIQQ', data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    stroff = shs[e_shstrndx][4]
    secs = {}
    for s in shs:
        name = data[stroff + s[0]:data.index(b'\0', stroff + s[0])].decode()
        secs[name] = dict(addr=s[3], off=s[4], size=s[5])

    def v2o(a):
        for n, s in secs.items():
            if s['addr'] <= a < s['addr'] + s['size'] and n not in ('.tbss', '.bss', '.relro_padding'):
                return a - s['addr'] + s['off']
        return None

    tlo = secs['.text']['addr']
    thi = secs['.plt']['addr'] + secs['.plt']['size']
    # Function bounds from .eh_frame_hdr's sorted table (datarel|sdata4 entries).
    h = secs['.eh_frame_hdr']
    ho = h['off']
    assert data[ho + 3] == 0x3b, 'unexpected .eh_frame_hdr table encoding'
    cnt, = struct.unpack_from('<I', data, ho + 8)
    starts, ends = [], []
    for i in range(cnt):
        il, fa = struct.unpack_from('<ii', data, ho + 12 + 8 * i)
        s = h['addr'] + il
        rng, = struct.unpack_from('<i', data, v2o(h['addr'] + fa) + 12)
        starts.append(s)
        ends.append(s + rng)
    r = secs['.rela.dyn']
    rel = {}
    for i in range(r['size'] // 24):
        off, info, add = struct.unpack_from('<QQq', data, r['off'] + 24 * i)
        if info & 0xffffffff == 8:  # R_X86_64_RELATIVE
            rel[off] = add
    ro = secs['.rodata']

    def cstr(a):
        o = v2o(a)
        if o is None:
            return None
        e = data.find(b'\0', o, o + 400)
        try:
            return data[o:e].decode('ascii') if e >= 0 else None
        except UnicodeDecodeError:
            return None

    vt = {}  # function address -> [(mangled class, slot, offset to top)]
    for S, T in rel.items():
        if S - 8 in rel:  # a vtable's typeinfo slot follows an unrelocated offset-to-top
            continue
        n = rel.get(T + 8)
        if n is None or not (ro['addr'] <= n < ro['addr'] + ro['size']):
            continue
        s = cstr(n)
        if not s or not re.match(r'^(N|[0-9])[A-Za-z0-9_]+$', s):
            continue
        o = v2o(S - 8)
        ott = struct.unpack_from('<q', data, o)[0] if o is not None else 1
        if ott > 0 or ott < -100000:
            continue
        k = 0
        while True:
            a = rel.get(S + 8 + 8 * k)
            if a is None or not (tlo <= a < thi):
                break
            vt.setdefault(a, []).append((s, k, ott))
            k += 1
    mang = sorted({x[0] for l in vt.values() for x in l})
    dem = subprocess.run(['c++filt'], input='\n'.join('_ZTS' + m for m in mang),
                         capture_output=True, text=True).stdout.split('\n')
    dem = {m: d.replace('typeinfo name for ', '') for m, d in zip(mang, dem)}
    gm = secs.get('google_malloc', dict(addr=0, size=0))  # tcmalloc's hot path
    pickle.dump(dict(starts=starts, ends=ends, vt=vt, dem=dem, malloc=(gm['addr'], gm['addr'] + gm['size'])),
                open(out, 'wb'))
    print('%d functions, %d named by a vtable' % (cnt, len(vt)))


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
