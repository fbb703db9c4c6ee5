package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The C plugin (shim/rewire.c, installed as rewire) serves ADD and DEL by
// itself: run from a directory without the Go plugin (rewire-plugin), a
// pod's ADD returns its result and configures eth0, and its DEL removes it.
// What it leaves to the Go plugin fails there with a CNI error naming the
// missing binary, which shows the hand-over: VERSION, a daemon that cannot
// be reached, and a config whose top-level socketPath it does not read
// itself (a \u escape). The reader of the config skips a nested socketPath.
func TestCPluginServesAddAndDelAlone(t *testing.T) {
	e := newEnv(t, envOpts{})
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(binDir, "rewire"))
	must(t, err)
	bin := filepath.Join(dir, "rewire")
	must(t, os.WriteFile(bin, raw, 0o755))
	p := e.newPod("default", "cplugin", nil)
	env := []string{"CNI_CONTAINERID=" + p.ContainerID, "CNI_NETNS=" + p.NetNS.Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + tools}
	conf := `{"cniVersion":"1.1.0","name":"rewire-net","type":"rewire","args":{"x":[{"socketPath":"/nowhere"},1.5e3,true,null]},` +
		`"socketPath":"` + e.daemon.Socket + `"}`

	code, res := runPlugin(t, bin, append(env, "CNI_COMMAND=ADD"), conf, 0)
	if code != 0 || res["ips"] == nil {
		t.Fatalf("ADD through the C plugin alone: exit %d, %v", code, res)
	}
	links, err := podLinks(t, p)
	must(t, err)
	if _, ok := links["eth0"]; !ok {
		t.Fatalf("no eth0 after the ADD: %v", keys(links))
	}
	if code, res := runPlugin(t, bin, append(env, "CNI_COMMAND=DEL"), conf, 0); code != 0 {
		t.Fatalf("DEL through the C plugin alone: exit %d, %v", code, res)
	}
	if links, _ := podLinks(t, p); len(links) != 0 {
		t.Errorf("interfaces left after the DEL: %v", keys(links))
	}

	for name, tc := range map[string]struct{ env, conf string }{
		"VERSION":          {"CNI_COMMAND=VERSION", conf},
		"no daemon":        {"CNI_COMMAND=ADD", strings.Replace(conf, e.daemon.Socket, filepath.Join(dir, "none.sock"), 1)},
		"escaped path":     {"CNI_COMMAND=ADD", strings.Replace(conf, `"socketPath":"/`, `"socketPath":"\u002f`, 1)},
		"malformed config": {"CNI_COMMAND=ADD", conf[:len(conf)-1]},
	} {
		code, res := runPlugin(t, bin, append(env, tc.env), tc.conf, 0)
		if details, _ := res["details"].(string); code == 0 || res["code"] != 999.0 || !strings.Contains(details, "rewire-plugin") {
			t.Errorf("%s: exit %d, %v; want the Go plugin's hand-over failing (it is not there)", name, code, res)
		}
	}
}
