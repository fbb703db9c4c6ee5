package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// "rewired install" (the DaemonSet's init step) puts a plugin and a config
// on the host that a runtime then uses as is: its first config is Rewire.
func TestInstalledPluginAndConfigWork(t *testing.T) {
	e := newEnv(t, envOpts{})
	host := t.TempDir()
	bin, conf := filepath.Join(host, "opt/cni/bin"), filepath.Join(host, "etc/cni/net.d")
	out, err := exec.Command(filepath.Join(binDir, "rewired"), "install", "--bin-dir", bin, "--conf-dir", conf,
		"--socket-path", e.daemon.Socket).CombinedOutput()
	if err != nil {
		t.Fatalf("rewired install: %v\n%s", err, out)
	}
	files, err := libcni.ConfFiles(conf, []string{".conf", ".conflist"})
	must(t, err)
	list, err := libcni.ConfListFromFile(files[0])
	must(t, err)
	rt := &harness.Runtime{CNI: libcni.NewCNIConfigWithCacheDir([]string{bin, tools}, filepath.Join(host, "cache"), harness.PluginExec()), Conf: list}

	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.36"), nil)
	p := e.newPod("default", "installed", map[string]string{selection.NetworksAnnotation: "mv"})
	ctx := context.Background()
	_, err = rt.Add(ctx, p)
	must(t, err)
	if links, _ := podLinks(t, p); len(links) != 2 {
		t.Errorf("interfaces = %v", keys(links))
	}
	must(t, rt.Del(ctx, p))
	e.assertNoLeaks()
}
