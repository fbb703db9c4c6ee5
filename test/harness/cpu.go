package harness

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// MachineCPU reads the busy and total jiffies of all CPUs (/proc/stat;
// idle and iowait are not busy).
func MachineCPU(t testing.TB) (busy, total uint64) {
	t.Helper()
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			t.Fatalf("/proc/stat: %v", err)
		}
		total += v
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return busy, total
}
