package reservation

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Free skips the gateway, what the store handed out and what taken
// reports, within rangeStart..rangeEnd, per range set and family.
func TestFree(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "net"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "net", "10.1.0.2"), []byte("c0"), 0o644))
	taken := func(ip net.IP) bool { return ip.Equal(net.ParseIP("10.1.0.3")) || ip.Equal(net.ParseIP("fd00::1:2")) }
	flannel, _ := flannelNode(t)
	for _, tc := range []struct {
		name, ipam string
		conf       string
		want       []string
		err        string
	}{
		{name: "legacy subnet", ipam: `"subnet":"10.1.0.0/29"`, want: []string{"10.1.0.4/29"}},
		{name: "range start", ipam: `"ranges":[[{"subnet":"10.1.0.0/29","rangeStart":"10.1.0.5"}]]`, want: []string{"10.1.0.5/29"}},
		{name: "gateway inside", ipam: `"ranges":[[{"subnet":"10.1.0.0/29","rangeStart":"10.1.0.4","gateway":"10.1.0.4"}]]`, want: []string{"10.1.0.5/29"}},
		{name: "dual stack", ipam: `"ranges":[[{"subnet":"10.1.0.0/29"}],[{"subnet":"fd00::1:0/120"}]]`, want: []string{"10.1.0.4/29", "fd00::1:3/120"}},
		{name: "next range of the set", ipam: `"ranges":[[{"subnet":"10.1.0.0/30"},{"subnet":"10.2.0.0/29"}]]`, want: []string{"10.2.0.2/29"}},
		{name: "full", ipam: `"ranges":[[{"subnet":"10.1.0.0/29","rangeEnd":"10.1.0.3"}]]`, err: "no free address"},
		{name: "flannel", conf: flannel, want: []string{"10.244.1.2/24"}},
		{name: "whereabouts", conf: `{"name":"net","plugins":[{"type":"ptp","ipam":{"type":"whereabouts","range":"10.1.0.0/29"}}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := tc.conf
			if conf == "" {
				conf = `{"name":"net","plugins":[{"type":"ptp","ipam":{"type":"host-local","dataDir":"` + dir + `",` + tc.ipam + `}}]}`
			}
			got, ok, err := Free([]byte(conf), taken)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Free: %v, %v; want an error saying %q", got, err, tc.err)
				}
				return
			}
			must(t, err)
			if ok != (tc.want != nil) || strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("Free = %v, %v; want %v", got, ok, tc.want)
			}
		})
	}
}
