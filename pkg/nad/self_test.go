package nad

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
)

// fakeExec records what would have been found and run.
type fakeExec struct {
	invoke.Exec
	ran []string
}

func (f *fakeExec) FindInPath(plugin string, _ []string) (string, error) {
	return "/opt/cni/bin/" + plugin, nil
}

func (f *fakeExec) ExecPlugin(_ context.Context, path string, _ []byte, _ []string) ([]byte, error) {
	f.ran = append(f.ran, path)
	return nil, nil
}

// GuardExec never finds or runs Rewire's own binaries, whether the config
// names them as the plugin or as its IPAM; other plugins run as before.
func TestGuardExec(t *testing.T) {
	cases := []struct {
		name, plugin, stdin, wantErr string
	}{
		{"delegate", "macvlan", `{"type":"macvlan","ipam":{"type":"host-local"}}`, ""},
		{"rewire", "rewire", `{"type":"rewire"}`, `plugin type "rewire" is Rewire's own plugin`},
		{"rewire-offline", "rewire-offline", `{"type":"rewire-offline"}`, `plugin type "rewire-offline"`},
		{"rewire as ipam", "macvlan", `{"type":"macvlan","ipam":{"type":"rewire"}}`, `ipam type "rewire"`},
		{"offline as ipam", "bridge", `{"type":"bridge","ipam":{"type":"rewire-offline"}}`, `ipam type "rewire-offline"`},
		{"rewire as escaped ipam", "macvlan", `{"type":"macvlan","ipam":{"type":"rew\u0069re"}}`, `ipam type "rewire"`},
		{"rewire as ipam, key in capitals", "macvlan", `{"type":"macvlan","IPAM":{"TYPE":"rewire-plugin"}}`, `ipam type "rewire-plugin"`},
		{"another string mentions rewire", "macvlan", `{"type":"macvlan","name":"rewire-net","ipam":{"type":"host-local"}}`, ""},
		{"stdin not an object", "macvlan", `[]`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := &fakeExec{}
			g := GuardExec(fake)
			path, err := g.FindInPath(c.plugin, nil)
			if err == nil {
				_, err = g.ExecPlugin(context.Background(), path, []byte(c.stdin), nil)
			}
			if c.wantErr == "" {
				if err != nil || len(fake.ran) != 1 {
					t.Fatalf("err %v, ran %v", err, fake.ran)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrSelfDelegation) || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error = %v, want %q", err, c.wantErr)
			}
			if len(fake.ran) != 0 {
				t.Errorf("ran %v", fake.ran)
			}
		})
	}
	// A path to Rewire's binary found some other way is not run either.
	fake := &fakeExec{}
	if _, err := GuardExec(fake).ExecPlugin(context.Background(), "/opt/cni/bin/rewire", []byte(`{}`), nil); !errors.Is(err, ErrSelfDelegation) || len(fake.ran) != 0 {
		t.Errorf("exec of /opt/cni/bin/rewire: %v, ran %v", err, fake.ran)
	}
}
