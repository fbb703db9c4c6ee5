package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// runPlugin executes the rewire binary as a runtime would, with the given
// env and stdin, optionally as another uid, and decodes its CNI error.
func runPlugin(t *testing.T, bin string, env []string, stdin string, uid int) (int, map[string]interface{}) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env, cmd.Stdin = env, strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var res map[string]interface{}
	_ = json.Unmarshal(out.Bytes(), &res)
	return code, res
}

// The daemon socket is root-only: its directory 0700, the socket 0600, and a
// process of another uid is refused even when it can reach the socket.
func TestSocketIsRootOnly(t *testing.T) {
	e := newEnv(t, envOpts{})
	for path, want := range map[string]os.FileMode{filepath.Dir(e.daemon.Socket): 0o700, e.daemon.Socket: 0o600} {
		st, err := os.Stat(path)
		must(t, err)
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %o, want %o", path, st.Mode().Perm(), want)
		}
	}
	// A copy of the plugin that uid 65534 may execute.
	dir, err := os.MkdirTemp("/tmp", "rewire-uid-") // t.TempDir's parent is 0700
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "rewire")
	for _, name := range []string{"rewire", "rewire-plugin"} { // as installed
		raw, err := os.ReadFile(filepath.Join(binDir, name))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, name), raw, 0o755))
	}
	p := e.newPod("default", "nobody", nil)
	env := []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + p.ContainerID, "CNI_NETNS=" + p.NetNS.Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + tools}
	conf := `{"cniVersion":"1.1.0","name":"rewire-net","type":"rewire","socketPath":"` + e.daemon.Socket + `"}`

	code, res := runPlugin(t, bin, env, conf, 65534)
	if code == 0 || res["code"] != 999.0 || !strings.Contains(res["details"].(string), "permission denied") {
		t.Errorf("uid 65534 through the 0700 dir: exit %d, %v", code, res)
	}
	// Open a path up (a hard link to the socket in a world-readable dir): the
	// daemon still refuses the peer by its uid.
	open := filepath.Join(dir, "open.sock")
	must(t, os.Link(e.daemon.Socket, open))
	must(t, os.Chmod(open, 0o666))
	openConf := strings.Replace(conf, e.daemon.Socket, open, 1)
	code, res = runPlugin(t, bin, env, openConf, 65534)
	if code == 0 || res["code"] != 999.0 || !strings.Contains(res["details"].(string), "403") {
		t.Errorf("uid 65534 on an open socket: exit %d, %v", code, res)
	}
	must(t, os.Chmod(open, 0o600))
	if links, _ := podLinks(t, p); len(links) != 0 {
		t.Errorf("a refused request created interfaces: %v", keys(links))
	}
	e.assertNoLeaks()
}

// Malformed CNI invocations (stdin, env) get the exact CNI error and
// create nothing. Together with TestBadInputRejected (annotations) and the
// unit tests of the parsers this is the bad-input catalogue. (No
// CNI_COMMAND at all is someone running the plugin by hand: it says what it
// is and exits 0, cmd/rewire's TestAbout.)
func TestBadCNIInvocations(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "path-type", `{"cniVersion":"1.0.0","name":"path-type","type":"/usr/bin/true"}`, nil)
	e.createNAD("default", "no-version", `{"name":"no-version","type":"macvlan"}`, nil)
	e.createNAD("default", "not-json", `{"cniVersion":`, nil)
	e.createNAD("default", "no-type", `{"cniVersion":"1.0.0","name":"no-type"}`, nil)
	e.createNAD("default", "ipam-path", `{"cniVersion":"1.0.0","name":"ipam-path","type":"macvlan","ipam":{"type":"../../bin/sh"}}`, nil)
	e.createNAD("default", "null-conf", `null`, nil)
	e.createNAD("default", "empty-list", `{"cniVersion":"1.0.0","name":"empty-list","plugins":[]}`, nil)
	bin := filepath.Join(binDir, "rewire")
	good := `{"cniVersion":"1.1.0","name":"rewire-net","type":"rewire","socketPath":"` + e.daemon.Socket + `"}`
	p := e.newPod("default", "bad-cni", nil)
	base := func(kv ...string) []string {
		env := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": p.ContainerID, "CNI_NETNS": p.NetNS.Path(),
			"CNI_IFNAME": "eth0", "CNI_PATH": tools, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bad-cni"}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(env, kv[i])
			} else {
				env[kv[i]] = kv[i+1]
			}
		}
		var out []string
		for k, v := range env {
			out = append(out, k+"="+v)
		}
		return out
	}
	withNetworks := func(value string) {
		setNetworks(t, p, value)
		waitCached(t)
	}
	cases := []struct {
		name     string
		networks string
		env      []string
		stdin    string
		code     float64
		msg      string
	}{
		{"stdin not JSON", "", base(), `{`, 6, "decoding network config"},
		{"stdin unsupported version", "", base(), `{"cniVersion":"9.9.9","socketPath":"` + e.daemon.Socket + `"}`, 1, `unsupported cniVersion "9.9.9"`},
		{"unknown CNI_COMMAND", "", base("CNI_COMMAND", "EXPLODE"), good, 4, `unknown CNI_COMMAND "EXPLODE"`},
		{"no CNI_NETNS on ADD", "", base("CNI_NETNS", ""), good, 4, "missing CNI_NETNS"},
		{"no CNI_CONTAINERID", "", base("CNI_CONTAINERID", ""), good, 4, "missing CNI_CONTAINERID"},
		{"no CNI_IFNAME", "", base("CNI_IFNAME", ""), good, 4, "missing CNI_IFNAME"},
		{"CNI_ARGS without =", "", base("CNI_ARGS", "garbage"), good, 4, `CNI_ARGS: "garbage" is not KEY=VALUE`},
		{"container ID with a path", "", base("CNI_CONTAINERID", "../../etc"), good, 4, `CNI_CONTAINERID: invalid container ID "../../etc"`},
		{"interface name with a path", "", base("CNI_IFNAME", "../../etc"), good, 4, `CNI_IFNAME: invalid interface name "../../etc"`},
		{"netns path with ..", "", base("CNI_NETNS", "/var/run/netns/../../etc"), good, 4, `CNI_NETNS: invalid network namespace path`},
		{"NAD type is a path", "path-type", base(), good, 7, "must be a bare plugin name"},
		{"NAD ipam type is a path", "ipam-path", base(), good, 7, "ipam type"},
		{"NAD without cniVersion", "no-version", base(), good, 7, "has no cniVersion"},
		{"NAD config not JSON", "not-json", base(), good, 7, "invalid CNI config JSON"},
		{"NAD without type", "no-type", base(), good, 7, "missing 'type'"},
		{"NAD config null", "null-conf", base(), good, 7, "not a JSON object"},
		{"NAD with no plugins", "empty-list", base(), good, 7, "no plugins"},
		{"pod not found", "", base("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=ghost"), good, 11, "pod default/ghost not found"},
		{"capability value wrong type", `[{"name":"path-type","ips":"10.0.0.1"}]`, base(), good, 7, "invalid JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			withNetworks(c.networks)
			code, res := runPlugin(t, bin, c.env, c.stdin, 0)
			if code != 1 || res["code"] != c.code || !strings.Contains(res["msg"].(string), c.msg) {
				t.Errorf("exit %d, error %v; want code %v with %q", code, res, c.code, c.msg)
			}
			if links, _ := podLinks(t, p); len(links) != 0 {
				t.Errorf("interfaces created: %v", keys(links))
			}
		})
	}
	withNetworks("")
	must(t, e.rt.Del(context.Background(), p))
	e.assertNoLeaks()
}

// waitCached gives the daemon's pod informer time to see an annotation edit.
func waitCached(t *testing.T) {
	t.Helper()
	// The watch delivers within milliseconds on this single machine; the
	// daemon reads only its cache on ADD.
	time.Sleep(100 * time.Millisecond)
}

// An ADD for a pod bound to another node (the cache never has it: the API
// read that follows finds it elsewhere) is refused, and nothing is wired.
func TestAddForPodOfAnotherNode(t *testing.T) {
	e := newEnv(t, envOpts{})
	p := e.newPod("default", "elsewhere", nil)
	pod, err := api.Client.CoreV1().Pods("default").Get(context.Background(), "elsewhere", metav1.GetOptions{})
	must(t, err)
	must(t, api.Client.CoreV1().Pods("default").Delete(context.Background(), "elsewhere", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}))
	pod.ResourceVersion, pod.Spec.NodeName = "", "some-other-node"
	created, err := api.Client.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{})
	must(t, err)
	p.UID = string(created.UID)
	_, err = e.rt.Add(context.Background(), p)
	if err == nil || !strings.Contains(err.Error(), "not bound to this node") {
		t.Fatalf("ADD of a pod bound to another node: %v, want an error saying it is not bound to this node", err)
	}
	links, err := podLinks(t, p)
	must(t, err)
	if delete(links, "lo"); len(links) > 0 {
		t.Fatalf("the refused pod got interfaces: %v", keys(links))
	}
	must(t, e.rt.Del(context.Background(), p))
	e.assertNoLeaks()
}
