package offline

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/store"
)

// fakePlugin is a delegate that only notes that it ran.
const fakePlugin = `#!/bin/sh
if [ "$CNI_COMMAND" = VERSION ]; then
  echo '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}'
  exit 0
fi
echo "$CNI_COMMAND" >> "$(dirname "$0")/ran-$(basename "$0")"
`

// A record naming Rewire's own plugin (as plugin or as IPAM, written by an
// older version) must not make the no-daemon DEL run it: that plugin would
// run this DEL again, one process deeper each time. The DEL fails, says
// what was not released, and the record keeps those attachments; the
// other attachments are released.
func TestDelRefusesSelfDelegation(t *testing.T) {
	stateDir, bin := t.TempDir(), t.TempDir()
	for _, name := range []string{"rewire", "rewire-offline", "macvlan", "bridge"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(fakePlugin), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	st, err := store.Open(stateDir, true)
	if err != nil {
		t.Fatal(err)
	}
	att := func(network, ifName, config string) store.Attachment {
		return store.Attachment{Spec: attachment.Spec{Network: network, IfName: ifName, Config: json.RawMessage(config)}, State: store.Added}
	}
	sb := &store.Sandbox{ContainerID: "c1", IfName: "eth0", Complete: true, Attachments: []store.Attachment{
		att("kube-system/cluster", "eth0", `{"cniVersion":"1.0.0","name":"cluster","plugins":[{"type":"bridge"}]}`),
		att("default/self", "net1", `{"cniVersion":"1.1.0","name":"self","plugins":[{"type":"rewire"}]}`),
		att("default/self-offline", "net2", `{"cniVersion":"1.1.0","name":"self-offline","plugins":[{"type":"rewire-offline"}]}`),
		att("default/self-ipam", "net3", `{"cniVersion":"1.0.0","name":"self-ipam","plugins":[{"type":"macvlan","ipam":{"type":"rewire"}}]}`),
	}}
	if err := st.Put(sb); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_PATH": bin}
	conf := `{"cniVersion":"1.1.0","name":"rewire-cni-network","type":"rewire","stateDir":"` + stateDir + `"}`
	out, code := Del(func(k string) string { return env[k] }, strings.NewReader(conf))

	var res struct {
		Code    uint   `json:"code"`
		Msg     string `json:"msg"`
		Details string `json:"details"`
	}
	if err := json.Unmarshal(out, &res); code != 1 || err != nil {
		t.Fatalf("exit %d, answer %s (%v); want a refusal", code, out, err)
	}
	if !strings.Contains(res.Msg, "not released") {
		t.Errorf("msg %q must say that something was not released", res.Msg)
	}
	for _, want := range []string{"default/self (interface net1)", "default/self-offline (interface net2)",
		"default/self-ipam (interface net3)", `"rewire" is Rewire's own plugin`} {
		if !strings.Contains(res.Details, want) {
			t.Errorf("details %q do not name %s", res.Details, want)
		}
	}
	for _, name := range []string{"rewire", "rewire-offline", "macvlan"} {
		if _, err := os.Stat(filepath.Join(bin, "ran-"+name)); err == nil {
			t.Errorf("%s was run", name)
		}
	}
	if _, err := os.Stat(filepath.Join(bin, "ran-bridge")); err != nil {
		t.Errorf("the cluster network's DEL did not run: %v", err)
	}
	left, err := st.Get("c1")
	if err != nil || left == nil {
		t.Fatalf("record after the refused DEL: %v %v", left, err)
	}
	var ifs []string
	for _, a := range left.Attachments {
		ifs = append(ifs, a.IfName)
	}
	if strings.Join(ifs, ",") != "net1,net2,net3" {
		t.Errorf("recorded after DEL: %v, want the three refused attachments", ifs)
	}
}

// Request fields that become paths are validated before the store is
// touched.
func TestDelValidatesTheRequest(t *testing.T) {
	stateDir := t.TempDir()
	conf := `{"cniVersion":"1.1.0","stateDir":"` + stateDir + `"}`
	for _, c := range []struct{ key, value, want string }{
		{"CNI_CONTAINERID", "", "missing CNI_CONTAINERID"},
		{"CNI_CONTAINERID", "../../etc", "CNI_CONTAINERID: invalid container ID"},
		{"CNI_IFNAME", "../x", "CNI_IFNAME: invalid interface name"},
		{"CNI_NETNS", "/run/netns/../../etc", "CNI_NETNS: invalid network namespace path"},
	} {
		env := map[string]string{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", c.key: c.value}
		out, code := Del(func(k string) string { return env[k] }, strings.NewReader(conf))
		if code != 1 || !strings.Contains(string(out), `"code":4`) || !strings.Contains(string(out), c.want) {
			t.Errorf("%s=%q: exit %d, %s; want code 4 with %q", c.key, c.value, code, out, c.want)
		}
	}
}

// The no-daemon DEL never reports a release it did not do: a stateDir
// without Rewire's store (the daemon runs with another --state-dir) is an
// error naming it, with nothing created there; a state dir whose lock a
// starting daemon holds answers "try again later".
func TestDelNeedsTheDaemonsStore(t *testing.T) {
	env := map[string]string{"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_PATH": t.TempDir()}
	del := func(stateDir string) (uint, string) {
		conf := `{"cniVersion":"1.1.0","name":"rewire-cni-network","type":"rewire","stateDir":"` + stateDir + `"}`
		out, code := Del(func(k string) string { return env[k] }, strings.NewReader(conf))
		var res struct {
			Code    uint   `json:"code"`
			Msg     string `json:"msg"`
			Details string `json:"details"`
		}
		if code != 1 || json.Unmarshal(out, &res) != nil {
			t.Fatalf("DEL with state dir %s: exit %d, %s", stateDir, code, out)
		}
		return res.Code, res.Msg + ": " + res.Details
	}
	missing := filepath.Join(t.TempDir(), "not-rewires")
	if code, msg := del(missing); code != 999 || !strings.Contains(msg, "not released") || !strings.Contains(msg, missing) {
		t.Fatalf("DEL without a store: code %d %q", code, msg)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("the DEL created %s (%v)", missing, err)
	}

	stateDir := t.TempDir()
	if _, err := store.Open(stateDir, true); err != nil {
		t.Fatal(err)
	}
	unlock, err := store.LockDir(stateDir, false) // the daemon
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if code, msg := del(stateDir); code != 11 {
		t.Fatalf("DEL beside a daemon holding the store: code %d %q, want 11", code, msg)
	}
}
