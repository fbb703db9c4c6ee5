package version

import (
	"runtime/debug"
	"testing"
)

func TestResolve(t *testing.T) {
	info := func(v string, ok bool) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			if !ok {
				return nil, false
			}
			return &debug.BuildInfo{Main: debug.Module{Path: "github.com/rewire-cni/rewire", Version: v}}, true
		}
	}
	for _, c := range []struct {
		name, set string
		read      func() (*debug.BuildInfo, bool)
		want      string
	}{
		{"set at link time wins", "v1.2.3", info("v0.0.1", true), "v1.2.3"},
		{"go install @version", "dev", info("v0.4.0", true), "v0.4.0"},
		{"local build", "dev", info("(devel)", true), "dev"},
		{"no build info", "dev", info("", false), "dev"},
		{"empty -X value", "", info("", true), "dev"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := resolve(c.set, c.read); got != c.want {
				t.Fatalf("resolve(%q) = %q, want %q", c.set, got, c.want)
			}
		})
	}
}
