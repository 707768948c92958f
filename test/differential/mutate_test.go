package differential

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

// defaultMutations keeps the run in scripts/test.sh to a few seconds;
// DIFF_MUTATIONS raises it for a long search.
const defaultMutations = 3000

// mutationBatch is how many mutants cross to the reader processes at once.
const mutationBatch = 500

func TestDifferentialMutantsEveryServerCallIsChargedOrRefused(t *testing.T) {
	n := envInt(t, "DIFF_MUTATIONS", defaultMutations)
	seed := uint64(envInt(t, "DIFF_SEED", int(time.Now().UnixNano()&(1<<62-1))))
	replay := fmt.Sprintf("\n\treplay: DIFF_SEED=%d DIFF_MUTATIONS=%d", seed, n)
	t.Logf("%d mutants, seed %d (replay with DIFF_SEED=%d)", n, seed, seed)
	// Printed, not only logged, so that a passing run in scripts/test.sh
	// still names its seed.
	fmt.Fprintf(os.Stderr, "differential: %d mutants, DIFF_SEED=%d\n", n, seed)

	r := needReaders(t)
	seeds := corpus(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var all []disagreement
	for done := 0; done < n; {
		batch := make([]entry, 0, min(mutationBatch, n-done))
		for len(batch) < cap(batch) {
			src := seeds[rng.IntN(len(seeds))]
			body, ops := mutate(rng, src.body)
			batch = append(batch, entry{fmt.Sprintf("mutant %d of %s (%s)", done+len(batch), src.label, ops), body})
		}
		all = append(all, check(t, r, batch)...)
		done += len(batch)
	}
	report(t, all, replay)
}

// envInt reads a whole number from the environment, or def when unset.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		t.Fatalf("%s=%q: want a whole number", name, s)
	}
	return v
}

// mutate applies one to three mutations to a copy of b and names them.
func mutate(rng *rand.Rand, b []byte) ([]byte, string) {
	out := bytes.Clone(b)
	ops := ""
	for range 1 + rng.IntN(3) {
		m := mutations[rng.IntN(len(mutations))]
		out = m.apply(rng, out)
		if ops != "" {
			ops += ", "
		}
		ops += m.name
	}
	return out, ops
}

// memberNames are the names the readers look for, to flip and duplicate.
var memberNames = []string{`"jsonrpc"`, `"method"`, `"params"`, `"name"`, `"id"`}

// members are inserted after a '{' or ',': duplicates, folded and escaped
// names, and values of the wrong type.
var members = []string{
	`"method":"tools/call",`, `"method":"tools/list",`, `"method":null,`, `"method":1,`,
	`"name":"search",`, `"name":"free",`, `"name":null,`, `"name":7,`,
	`"params":{"name":"search"},`, `"params":{"name":"free"},`, `"params":null,`,
	`"jsonrpc":"2.0",`, `"jsonrpc":null,`, `"jsonrpc":"1.0",`, `"id":1,`, `"id":null,`, `"id":NaN,`,
	`"Method":"tools/call",`, `"NAME":"search",`, `"paramſ":{"name":"search"},`, `"jſonrpc":"2.0",`,
	`"\u006dethod":"tools/call",`, `"\u006eame":"search",`, `"result":{},`, `"x":[[[{}]]],`,
}

// specials are inserted anywhere.
var specials = []string{
	`"`, `\`, `{}`, `[]`, `{`, `}`, `[`, `]`, `,`, `:`, ` `, "\x00", "\xff", "\xef\xbb\xbf",
	"\xed", "\xc3", `\u0000`, `\ud800`, `\u006d`, `NaN`, `1e400`, `null`, "ſ", "K",
	searchCall,
}

var mutations = []struct {
	name  string
	apply func(*rand.Rand, []byte) []byte
}{
	{"flip a byte", func(rng *rand.Rand, b []byte) []byte {
		if len(b) == 0 {
			return b
		}
		i := rng.IntN(len(b))
		if rng.IntN(2) == 0 {
			b[i] ^= 1 << rng.IntN(8)
		} else {
			const picks = "\"\\{}[],:\x00\xff\xc3\xed aZ"
			b[i] = picks[rng.IntN(len(picks))]
		}
		return b
	}},
	{"insert a special", func(rng *rand.Rand, b []byte) []byte {
		return insert(b, rng.IntN(len(b)+1), specials[rng.IntN(len(specials))])
	}},
	{"delete bytes", func(rng *rand.Rand, b []byte) []byte {
		if len(b) == 0 {
			return b
		}
		i := rng.IntN(len(b))
		j := min(len(b), i+1+rng.IntN(4))
		return append(b[:i], b[j:]...)
	}},
	{"fold a member name", func(rng *rand.Rand, b []byte) []byte {
		name := memberNames[rng.IntN(len(memberNames))]
		at := indexes(b, name)
		if len(at) == 0 {
			return b
		}
		i := at[rng.IntN(len(at))] + 1 + rng.IntN(len(name)-2)
		switch c := b[i]; {
		case c == 's' && rng.IntN(2) == 0:
			return append(b[:i], append([]byte("ſ"), b[i+1:]...)...)
		case rng.IntN(3) == 0:
			return append(b[:i], append(fmt.Appendf(nil, `\u%04x`, c), b[i+1:]...)...)
		default:
			b[i] ^= 0x20
			return b
		}
	}},
	{"duplicate a member", func(rng *rand.Rand, b []byte) []byte {
		var at []int
		for i, c := range b {
			if c == '{' || c == ',' {
				at = append(at, i+1)
			}
		}
		if len(at) == 0 {
			return b
		}
		m := members[rng.IntN(len(members))]
		i := at[rng.IntN(len(at))]
		if b[i-1] == ',' {
			m = m[:len(m)-1] + "," // the member then the comma that was there
		}
		return insert(b, i, m)
	}},
	{"wrap in an array", func(rng *rand.Rand, b []byte) []byte {
		switch rng.IntN(3) {
		case 0:
			return []byte("[" + string(b) + "]")
		case 1:
			return []byte("[" + string(b) + "," + searchCall + "]")
		default:
			return []byte("[" + searchCall + "," + string(b) + "]")
		}
	}},
	{"append a value", func(rng *rand.Rand, b []byte) []byte {
		return append(b, []string{searchCall, " x", "]", "}", "\n" + searchCall}[rng.IntN(5)]...)
	}},
	{"transcode", func(rng *rand.Rand, b []byte) []byte {
		t := transcodings[rng.IntN(len(transcodings))]
		return t.encode(b)
	}},
	{"swap UTF-16 byte order", func(rng *rand.Rand, b []byte) []byte {
		for i := 0; i+1 < len(b); i += 2 {
			binary.BigEndian.PutUint16(b[i:], binary.LittleEndian.Uint16(b[i:]))
		}
		return b
	}},
}

// insert puts s into b at i.
func insert(b []byte, i int, s string) []byte {
	out := make([]byte, 0, len(b)+len(s))
	out = append(out, b[:i]...)
	out = append(out, s...)
	return append(out, b[i:]...)
}

// indexes returns where sub starts in b.
func indexes(b []byte, sub string) []int {
	var at []int
	for i := 0; ; {
		j := bytes.Index(b[i:], []byte(sub))
		if j < 0 {
			return at
		}
		at = append(at, i+j)
		i += j + 1
	}
}
