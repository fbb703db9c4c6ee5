package leancni

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/containernetworking/cni/pkg/version"
)

// recorder is a plugin exec that records what each plugin got and answers
// with a result naming the plugin (in the config's cniVersion).
type recorder struct {
	mu    sync.Mutex
	calls []call
}

type call struct {
	plugin string
	stdin  any
	env    []string
}

func (r *recorder) ExecPlugin(_ context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	var conf struct {
		CNIVersion string `json:"cniVersion"`
		Type       string `json:"type"`
	}
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return nil, err
	}
	var decoded any
	if err := json.Unmarshal(stdin, &decoded); err != nil {
		return nil, err
	}
	env := slices.Clone(environ)
	slices.Sort(env)
	r.mu.Lock()
	r.calls = append(r.calls, call{path, decoded, env})
	r.mu.Unlock()
	n := len(r.calls)
	switch conf.Type {
	case "failing":
		return nil, &types.Error{Code: 11, Msg: "no luck"}
	case "versionless": // a result in the config's version, by omission
		return fmt.Appendf(nil, `{"ips":[{"address":"10.0.1.%d/24"}]}`, n), nil
	case "garbage":
		return []byte("not JSON"), nil
	case "old-result": // a result in an older version than the config's
		return fmt.Appendf(nil, `{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.2.%d/24"}]}`, n), nil
	}
	return fmt.Appendf(nil, `{"cniVersion":%q,"interfaces":[{"name":"eth0","mac":"02:00:00:00:00:%02x","sandbox":"/var/run/netns/x"}],"ips":[{"interface":0,"address":"10.0.0.%d/24","gateway":"10.0.0.1"}],"dns":{"nameservers":["%s"]}}`,
		conf.CNIVersion, n, n, conf.Type), nil
}

func (r *recorder) FindInPath(plugin string, paths []string) (string, error) {
	if plugin == "missing" {
		return "", fmt.Errorf("failed to find plugin %q in path %s", plugin, paths)
	}
	return "/opt/cni/bin/" + plugin, nil
}

func (r *recorder) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

var _ invoke.Exec = (*recorder)(nil)

// AddNetworkList gives every plugin what libcni's does (config, environment),
// returns the same result and leaves a cache entry libcni reads the same.
func TestAddNetworkListIsLibcnis(t *testing.T) {
	for _, tc := range []struct {
		name, list string
		caps       map[string]any
		args       [][2]string
		wantErr    string
	}{
		{name: "one plugin", list: `{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge","bridge":"br0","ipam":{"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24"}]]}}]}`},
		{name: "chain: prevResult, capabilities of the plugins declaring them",
			list: `{"cniVersion":"1.1.0","name":"chain","plugins":[{"type":"bridge","capabilities":{"ips":true,"mac":false}},{"type":"portmap","capabilities":{"portMappings":true}},{"type":"tuning","name":"ignored","sysctl":{"a":"1"}}]}`,
			caps: map[string]any{"ips": []any{"10.0.0.9/24"}, "mac": "02:00:00:00:00:09", "portMappings": []any{map[string]any{"hostPort": 80.0}}, "rewire.io/cni-args": "IP=1"},
			args: [][2]string{{"IgnoreUnknown", "true"}, {"K8S_POD_NAME", "p"}}},
		{name: "keys libcni sets only sometimes, set by the config",
			list: `{"cniVersion":"1.0.0","name":"own","plugins":[{"type":"bridge","runtimeConfig":{"mine":1},"prevResult":{"cniVersion":"1.0.0"}},{"type":"portmap","capabilities":{"portMappings":true},"runtimeConfig":{"mine":2}}]}`,
			caps: map[string]any{"portMappings": []any{}}},
		{name: "a result without a version, one in an older version", list: `{"cniVersion":"1.0.0","name":"v","plugins":[{"type":"versionless"},{"type":"tuning"},{"type":"old-result"}]}`},
		{name: "a result that is not JSON", list: `{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"garbage"}]}`, wantErr: `failed to unmarshal raw result`},
		{name: "an old version", list: `{"cniVersion":"0.3.1","name":"old","plugins":[{"type":"macvlan","master":"eth0","cniVersion":"0.2.0","name":"other"},{"type":"sbr"}]}`},
		{name: "plugin not found", list: `{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"missing"}]}`, wantErr: `plugin type="missing" failed (add): failed to find plugin`},
		{name: "plugin fails", list: `{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"},{"type":"failing","name":"f"}]}`, wantErr: `plugin type="failing" name="f" failed (add): no luck`},
		{name: "bad network name", list: `{"cniVersion":"1.0.0","name":"a/b","plugins":[{"type":"bridge"}]}`, wantErr: `invalid characters found in network name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list, err := libcni.ConfListFromBytes([]byte(tc.list))
			if err != nil {
				t.Fatal(err)
			}
			rt := &libcni.RuntimeConf{ContainerID: "c1", NetNS: "/var/run/netns/x", IfName: "net1", Args: tc.args, CapabilityArgs: tc.caps}
			type outcome struct {
				result any
				err    string
				calls  []call
				cached any
			}
			run := func(newCNI func(dir string, ex invoke.Exec) libcni.CNI) outcome {
				ex := &recorder{}
				cni := newCNI(t.TempDir(), ex)
				var o outcome
				res, err := cni.AddNetworkList(context.Background(), list, rt)
				if err != nil {
					o.err = err.Error()
				} else {
					o.result = res
					cachedRes, err := cni.GetNetworkListCachedResult(list, rt)
					if err != nil {
						t.Fatal(err)
					}
					conf, cachedRT, err := cni.GetNetworkListCachedConfig(list, rt)
					if err != nil {
						t.Fatal(err)
					}
					atts, err := cni.GetCachedAttachments(rt.ContainerID)
					if err != nil || len(atts) != 1 {
						t.Fatalf("cached attachments %v, %v", atts, err)
					}
					o.cached = []any{cachedRes, string(conf), cachedRT, atts[0].Network, atts[0].IfName, atts[0].NetNS}
				}
				o.calls = ex.calls
				return o
			}
			want := run(func(dir string, ex invoke.Exec) libcni.CNI {
				return libcni.NewCNIConfigWithCacheDir([]string{"/opt/cni/bin"}, dir, ex)
			})
			got := run(func(dir string, ex invoke.Exec) libcni.CNI { return New([]string{"/opt/cni/bin"}, dir, ex) })
			if tc.wantErr != "" && !strings.Contains(want.err, tc.wantErr) {
				t.Fatalf("libcni's error %q, the case expects %q", want.err, tc.wantErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("leancni:\n%+v\nlibcni:\n%+v", got, want)
			}
		})
	}
}

// The environment plugins get follows the process environment.
func TestEnvironmentFollowsTheProcess(t *testing.T) {
	ex := &recorder{}
	cni := New([]string{"/opt/cni/bin"}, t.TempDir(), ex)
	list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	rt := &libcni.RuntimeConf{ContainerID: "c1", NetNS: "/x", IfName: "eth0"}
	t.Setenv("LEANCNI_TEST", "one")
	t.Setenv("CNI_COMMAND", "DEL") // never wins over the call's own
	for _, v := range []string{"one", "two"} {
		t.Setenv("LEANCNI_TEST", v)
		if _, err := cni.AddNetworkList(context.Background(), list, rt); err != nil {
			t.Fatal(err)
		}
		env := ex.calls[len(ex.calls)-1].env
		if !slices.Contains(env, "LEANCNI_TEST="+v) || !slices.Contains(env, "CNI_COMMAND=ADD") || slices.Contains(env, "CNI_COMMAND=DEL") {
			t.Errorf("environment %v, want LEANCNI_TEST=%s and only CNI_COMMAND=ADD", env, v)
		}
	}
}

// DelNetworkList gives every plugin what libcni's does (in reverse order,
// with the cached result from 0.4.0 on) and removes the cache entry,
// whichever of the two wrote it, and also when there is none or it is
// damaged.
func TestDelNetworkListIsLibcnis(t *testing.T) {
	const chain = `{"cniVersion":"1.1.0","name":"chain","plugins":[{"type":"bridge","capabilities":{"ips":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}`
	libcniOf := func(dir string, ex invoke.Exec) libcni.CNI {
		return libcni.NewCNIConfigWithCacheDir([]string{"/opt/cni/bin"}, dir, ex)
	}
	leanOf := func(dir string, ex invoke.Exec) libcni.CNI { return New([]string{"/opt/cni/bin"}, dir, ex) }
	for _, tc := range []struct {
		name, list string
		// cache prepares the cache: ADD by one of the two, or a file
		cache func(t *testing.T, dir string, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf)
	}{
		{"after libcni's ADD", chain, addBy(libcniOf)},
		{"after leancni's ADD", chain, addBy(leanOf)},
		{"a result cached in an older version", `{"cniVersion":"1.0.0","name":"chain","plugins":[{"type":"portmap"},{"type":"old-result"}]}`, addBy(leanOf)},
		{"a config's own prevResult, nothing cached", `{"cniVersion":"1.0.0","name":"chain","plugins":[{"type":"bridge","prevResult":{"cniVersion":"1.0.0","ips":[]}}]}`,
			func(*testing.T, string, *libcni.NetworkConfigList, *libcni.RuntimeConf) {}},
		{"an old version: no prevResult", `{"cniVersion":"0.3.1","name":"old","plugins":[{"type":"macvlan"},{"type":"sbr"}]}`, addBy(leanOf)},
		{"nothing cached", chain, func(*testing.T, string, *libcni.NetworkConfigList, *libcni.RuntimeConf) {}},
		{"a damaged entry", chain, func(t *testing.T, dir string, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) {
			must(t, os.MkdirAll(filepath.Join(dir, "results"), 0o700))
			must(t, os.WriteFile(filepath.Join(dir, "results", "chain-c1-net1"), []byte(`{"kind":"cniCacheV1","result":{"cniVersion":"9"}}`), 0o600))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list, err := libcni.ConfListFromBytes([]byte(tc.list))
			must(t, err)
			rt := &libcni.RuntimeConf{ContainerID: "c1", NetNS: "/var/run/netns/x", IfName: "net1",
				CapabilityArgs: map[string]any{"ips": []any{"10.0.0.9/24"}}, Args: [][2]string{{"K8S_POD_NAME", "p"}}}
			run := func(newCNI func(string, invoke.Exec) libcni.CNI) []call {
				dir := t.TempDir()
				tc.cache(t, dir, list, rt)
				ex := &recorder{}
				must(t, newCNI(dir, ex).DelNetworkList(context.Background(), list, rt))
				if left, _ := filepath.Glob(filepath.Join(dir, "results", "*")); len(left) != 0 {
					t.Errorf("cache entries left: %v", left)
				}
				return ex.calls
			}
			want, got := run(libcniOf), run(leanOf)
			if len(want) != len(list.Plugins) || !reflect.DeepEqual(got, want) {
				t.Errorf("leancni's DEL:\n%+v\nlibcni's:\n%+v", got, want)
			}
		})
	}
}

// addBy returns a cache preparation that ADDs with the CNI newCNI makes.
func addBy(newCNI func(string, invoke.Exec) libcni.CNI) func(*testing.T, string, *libcni.NetworkConfigList, *libcni.RuntimeConf) {
	return func(t *testing.T, dir string, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) {
		_, err := newCNI(dir, &recorder{}).AddNetworkList(context.Background(), list, rt)
		must(t, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// held is Files that writes nothing to disk until Flush.
type held struct {
	direct
	mu    sync.Mutex
	files map[string][]byte // nil: removed
}

func (h *held) WriteFile(path string, data []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.files == nil {
		h.files = map[string][]byte{}
	}
	h.files[path] = data
	return nil
}

func (h *held) Remove(path string) error { return h.WriteFile(path, nil) }

func (h *held) ReadFile(path string) ([]byte, error) {
	h.mu.Lock()
	data, ok := h.files[path]
	h.mu.Unlock()
	if !ok {
		return os.ReadFile(path)
	}
	if data == nil {
		return nil, os.ErrNotExist
	}
	return data, nil
}

func (h *held) Flush() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for path, data := range h.files {
		err := h.direct.Remove(path)
		if data != nil {
			err = h.direct.WriteFile(path, data)
		}
		if err != nil {
			return err
		}
		delete(h.files, path)
	}
	return nil
}

// With the cache written behind, DEL reads the cached result not yet on
// disk, and libcni's readers get what it would have read (the files
// flushed first).
func TestCacheWrittenBehind(t *testing.T) {
	list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"chain","plugins":[{"type":"bridge"},{"type":"portmap"}]}`))
	must(t, err)
	rt := &libcni.RuntimeConf{ContainerID: "c1", NetNS: "/var/run/netns/x", IfName: "net1"}
	dir, files, ex := t.TempDir(), &held{}, &recorder{}
	cni := New([]string{"/opt/cni/bin"}, dir, ex).WriteBehind(files)
	onDisk := func() []string {
		on, _ := filepath.Glob(filepath.Join(dir, "results", "*"))
		return on
	}
	_, err = cni.AddNetworkList(context.Background(), list, rt)
	must(t, err)
	if on := onDisk(); len(on) != 0 {
		t.Fatalf("cache written at once: %v", on)
	}
	must(t, cni.DelNetworkList(context.Background(), list, rt))
	if last := ex.calls[len(ex.calls)-1].stdin.(map[string]any); last["prevResult"] == nil {
		t.Errorf("DEL got no prevResult from the cache entry behind: %v", last)
	}
	res, err := cni.AddNetworkList(context.Background(), list, rt)
	must(t, err)
	cachedRes, err := cni.GetNetworkListCachedResult(list, rt)
	must(t, err)
	if !reflect.DeepEqual(cachedRes, res) || len(onDisk()) != 1 {
		t.Errorf("libcni's cached result %+v (want %+v), files %v", cachedRes, res, onDisk())
	}
}

// EncodeResult encodes what json.Marshal does.
func TestEncodeResult(t *testing.T) {
	for _, raw := range []string{
		`{"cniVersion":"1.0.0"}`,
		`{"cniVersion":"1.0.0","dns":{}}`,
		`{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","mtu":1400,"sandbox":"/var/run/netns/x","socketPath":"/s","pciID":"0000:00:01.0"},{"name":"veth0"}],
		  "ips":[{"interface":0,"address":"10.0.0.2/24","gateway":"10.0.0.1"},{"address":"fd00::2/64"}],
		  "routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1","mtu":1400,"advmss":1360,"priority":10,"table":100,"scope":0},{"dst":"::/0"}],
		  "dns":{"nameservers":["10.0.0.10"],"domain":"cluster.local","search":["svc"],"options":["ndots:5"]}}`,
		`{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}],"dns":{}}`,
	} {
		r, err := create.CreateFromBytes([]byte(raw))
		must(t, err)
		want, err := json.Marshal(r)
		must(t, err)
		got, err := EncodeResult(r)
		must(t, err)
		var w, g any
		must(t, json.Unmarshal(want, &w))
		must(t, json.Unmarshal(got, &g))
		if !reflect.DeepEqual(g, w) {
			t.Errorf("EncodeResult:\n%s\njson.Marshal:\n%s", got, want)
		}
	}
}

// The cache's names are listed once, then kept by the CNI's own writes and
// removals; Forget has them listed again.
func TestCachedNames(t *testing.T) {
	dir := t.TempDir()
	results := filepath.Join(dir, "results")
	must(t, os.MkdirAll(results, 0o700))
	must(t, os.WriteFile(filepath.Join(results, "old-c1-eth0"), []byte("{}"), 0o600))
	cni := New([]string{"/opt/cni/bin"}, dir, &recorder{})
	names := func(id string) []string {
		t.Helper()
		n, err := cni.CachedNames(id)
		must(t, err)
		slices.Sort(n)
		return n
	}
	if got := names("c1"); !slices.Equal(got, []string{"old-c1-eth0"}) {
		t.Fatalf("listed %v", got)
	}
	list, err := libcni.ConfListFromBytes([]byte(`{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"}]}`))
	must(t, err)
	rt := &libcni.RuntimeConf{ContainerID: "c1", NetNS: "/x", IfName: "net1"}
	_, err = cni.AddNetworkList(context.Background(), list, rt)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(results, "past-c1-eth9"), []byte("{}"), 0o600)) // not through the CNI
	if got := names("c1"); !slices.Equal(got, []string{"net-c1-net1", "old-c1-eth0"}) {
		t.Errorf("after ADD %v (the file written past the CNI is not seen until Forget)", got)
	}
	must(t, cni.DelNetworkList(context.Background(), list, rt))
	if got := names("c1"); !slices.Equal(got, []string{"old-c1-eth0"}) {
		t.Errorf("after DEL %v", got)
	}
	cni.Forget()
	if got := names("c1"); !slices.Equal(got, []string{"old-c1-eth0", "past-c1-eth9"}) {
		t.Errorf("after Forget %v", got)
	}
}
