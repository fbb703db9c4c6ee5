package cluster

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
)

// dropCounters reads where the kernel counts the packets it drops, for
// telling a lost probe's cause: input backlogs, neighbour table discards,
// failed resolutions and forced GCs (global), and per netns its links'
// dropped packets and IP and UDP discards. Keys are "where counter".
func dropCounters(t testing.TB, nss map[string]ns.NetNS) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	raw, err := os.ReadFile("/proc/net/softnet_stat")
	must(t, err)
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			v, _ := strconv.ParseUint(f[1], 16, 64)
			out["kernel input-backlog-dropped"] += v
		}
	}
	if raw, err := os.ReadFile("/proc/net/stat/arp_cache"); err == nil {
		addColumns(out, "kernel arp", string(raw), 16, "unresolved_discards", "table_fulls", "res_failed", "forced_gc_runs")
	}
	for name, n := range nss {
		err := n.Do(func(ns.NetNS) error {
			links, err := netlinksafe.LinkList()
			if err != nil {
				return err
			}
			for _, l := range links {
				if st := l.Attrs().Statistics; st != nil {
					out[name+" "+l.Attrs().Name+" rx_dropped"] = st.RxDropped
					out[name+" "+l.Attrs().Name+" tx_dropped"] = st.TxDropped
				}
			}
			raw, err := os.ReadFile("/proc/thread-self/net/snmp")
			if err != nil {
				return err
			}
			addSNMP(out, name, string(raw), "Ip:InDiscards", "Ip:OutDiscards", "Ip:OutNoRoutes", "Udp:InErrors", "Udp:RcvbufErrors", "Udp:SndbufErrors")
			return nil
		})
		if err != nil {
			t.Logf("drop counters of %s: %v", name, err)
		}
	}
	return out
}

// addColumns sums the named columns of a table with a header line (base:
// the values' base) into out.
func addColumns(out map[string]uint64, prefix, table string, base int, names ...string) {
	lines := strings.Split(strings.TrimSpace(table), "\n")
	header := strings.Fields(lines[0])
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		for _, name := range names {
			if i := slices.Index(header, name); i >= 0 && i < len(f) {
				v, _ := strconv.ParseUint(f[i], base, 64)
				out[prefix+" "+name] += v
			}
		}
	}
}

// addSNMP adds the named "Proto:Field" counters of /proc/net/snmp.
func addSNMP(out map[string]uint64, prefix, snmp string, names ...string) {
	lines := strings.Split(strings.TrimSpace(snmp), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		header, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for j := 1; j < len(header) && j < len(values); j++ {
			if key := header[0] + header[j]; slices.Contains(names, key) {
				v, _ := strconv.ParseUint(values[j], 10, 64)
				out[prefix+" "+key] = v
			}
		}
	}
}

// grownCounters lists the counters larger in after than in before.
func grownCounters(before, after map[string]uint64) string {
	var grown []string
	for k, v := range after {
		if v > before[k] {
			grown = append(grown, fmt.Sprintf("%s +%d", k, v-before[k]))
		}
	}
	slices.Sort(grown)
	return strings.Join(grown, ", ")
}
