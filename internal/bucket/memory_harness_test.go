package bucket

import (
	"hash/maphash"
	"testing"
	"time"
)

func memoryHarness(m *Memory) harness {
	return harness{store: m, stored: func(t *testing.T, key string) (int64, time.Duration, bool) {
		sh := &m.shards[maphash.String(m.seed, key)&m.mask]
		sh.mu.Lock()
		defer sh.mu.Unlock()
		i, ok := sh.index[key]
		if !ok {
			return 0, 0, false
		}
		tat := sh.entries[i].tat
		return tat, time.Until(time.UnixMicro(tat)), true
	}}
}

func TestMemoryConformance(t *testing.T) {
	runConformance(t, func(t *testing.T) harness { return memoryHarness(NewMemory(MemoryOptions{})) })
}
