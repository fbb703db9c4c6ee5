package attachment

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// recorder is a libcni.CNI that records the runtime conf of each call.
type recorder struct {
	libcni.CNI
	got []*libcni.RuntimeConf
}

func (r *recorder) AddNetworkList(_ context.Context, _ *libcni.NetworkConfigList, rt *libcni.RuntimeConf) (types.Result, error) {
	r.got = append(r.got, rt)
	return nil, nil
}

func (r *recorder) CheckNetworkList(_ context.Context, _ *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	r.got = append(r.got, rt)
	return nil
}

func (r *recorder) DelNetworkList(_ context.Context, _ *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	r.got = append(r.got, rt)
	return nil
}

// An attachment's own CNI_ARGS reach the plugins as CNI_ARGS on ADD, CHECK
// and DEL, never as runtimeConfig, and survive the store's JSON round trip.
func TestWithCNIArgs(t *testing.T) {
	runtimeArgs := [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "p"}}
	cases := []struct {
		name  string
		args  [][2]string // the runtime's
		pairs [][2]string // the attachment's
		want  [][2]string
	}{
		{"none", runtimeArgs, nil, runtimeArgs},
		{"IgnoreUnknown added", runtimeArgs, [][2]string{{"MAC", "02:00:00:00:00:01"}, {"IP", "10.1.1.21/24,fd00::21/64"}},
			append(append([][2]string{}, runtimeArgs...), [2]string{"IgnoreUnknown", "true"},
				[2]string{"MAC", "02:00:00:00:00:01"}, [2]string{"IP", "10.1.1.21/24,fd00::21/64"})},
		{"IgnoreUnknown kept", append([][2]string{{"IgnoreUnknown", "1"}}, runtimeArgs...), [][2]string{{"IP", "10.1.1.21/24"}},
			append(append([][2]string{{"IgnoreUnknown", "1"}}, runtimeArgs...), [2]string{"IP", "10.1.1.21/24"})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := Spec{CapabilityArgs: map[string]interface{}{"portMappings": []int{1}}}
			s.SetCNIArgs(c.pairs)
			raw, err := json.Marshal(s) // as stored
			if err != nil {
				t.Fatal(err)
			}
			var stored Spec
			if err := json.Unmarshal(raw, &stored); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(stored.CNIArgs(), c.pairs) {
				t.Errorf("CNIArgs() = %v, want %v", stored.CNIArgs(), c.pairs)
			}
			rec := &recorder{}
			cni := WithCNIArgs(rec)
			rt := &libcni.RuntimeConf{ContainerID: "c", Args: c.args, CapabilityArgs: stored.CapabilityArgs}
			_, _ = cni.AddNetworkList(context.Background(), nil, rt)
			_ = cni.CheckNetworkList(context.Background(), nil, rt)
			_ = cni.DelNetworkList(context.Background(), nil, rt)
			for i, got := range rec.got {
				if !reflect.DeepEqual(got.Args, c.want) {
					t.Errorf("call %d: Args = %v, want %v", i, got.Args, c.want)
				}
				if _, ok := got.CapabilityArgs[CNIArgsKey]; ok || got.CapabilityArgs["portMappings"] == nil {
					t.Errorf("call %d: CapabilityArgs = %v, want portMappings only", i, got.CapabilityArgs)
				}
			}
			if _, ok := rt.CapabilityArgs[CNIArgsKey]; len(c.pairs) > 0 && !ok || !reflect.DeepEqual(rt.Args, c.args) {
				t.Errorf("the caller's runtime conf was changed: %+v", rt)
			}
		})
	}
}
