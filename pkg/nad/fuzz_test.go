package nad

import (
	"strings"
	"testing"
)

// FuzzConfList: any NAD config loads or fails cleanly; a loaded one has a
// name, plugins, and only bare plugin types.
func FuzzConfList(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"0.3.1","type":"macvlan"}`,
		`{"cniVersion":"1.0.0","name":"l","plugins":[{"type":"bridge","ipam":{"type":"host-local"}},{"type":"tuning"}]}`,
		`{"cniVersion":"1.0.0","name":"a","type":"../x"}`, `{`, `[]`, `{"plugins":null}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		list, err := ConfList([]byte(s), "fallback")
		if err != nil {
			return
		}
		if list.Name == "" || len(list.Plugins) == 0 {
			t.Fatalf("accepted %q without a name or plugins", s)
		}
		for _, p := range list.Plugins {
			if strings.ContainsAny(p.Network.Type, "/\\") || strings.ContainsAny(p.Network.IPAM.Type, "/\\") {
				t.Fatalf("accepted a path as plugin type in %q", s)
			}
		}
	})
}
