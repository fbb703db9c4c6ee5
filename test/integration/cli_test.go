package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rewire-cni/rewire/pkg/netstatus"
	"github.com/rewire-cni/rewire/test/harness"
)

// kubectlRewire runs the kubectl plugin against the test API server.
func kubectlRewire(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "kubectl-rewire"), append(args, "--kubeconfig", api.Kubeconfig, "-n", "default", "--timeout", "20s")...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The kubectl plugin drives hot-plug and the live switch of a running pod
// and reports the node daemon's outcome.
func TestKubectlRewire(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "cli-mv", e.macvlanConf("cli-mv", "192.168.51"), nil)
	e.createNAD("default", "cli-ptp", e.ptpConf(fmt.Sprintf("cli-ptp-%d", e.n)), nil)
	p := e.newPod("default", "cli", nil)
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	cluster := fmt.Sprintf("cluster-%d", e.n)

	steps := []struct {
		args    []string
		fails   bool
		outputs string // regexp the output must match
	}{
		{[]string{"attach", "cli", "cli-mv", "--ifname", "net5"}, false, `AddedInterface: Added net5 \[192\.168\.51\.\d+/24\] from default/cli-mv`},
		{[]string{"attach", "cli", "nope"}, true, `InterfaceAddRejected: .*default/nope.*not found`},
		{[]string{"detach", "cli", "nope"}, false, `removed from the pod's k8s.v1.cni.cncf.io/networks \(it was not attached\)`},
		{[]string{"status", "cli"}, false, `(?s)INTERFACE\s+NETWORK\s+IPS\s+MAC\s+DEFAULT\neth0\s+` + cluster + `\s+10\.250\.\d+\.\d+\s+\S+\s+true\nnet5\s+default/cli-mv\s+192\.168\.51\.\d+\s+\S+\s+false\n$`},
		{[]string{"status", "cli", "--node-view"}, false, `(?s)net5\s+default/cli-mv.*\n\(no node view: no rewired pod \(app=rewire in kube-system\) on node node-\d+\)\n$`},
		{[]string{"switch", "cli", "--to", "cli-ptp"}, false, `NetworkSwitched: Switched eth0 from ` + cluster + ` to default/cli-ptp keeping \[10\.250\.\d+\.\d+/24\]: traffic moved in [0-9.]+ ms, done in [0-9.]+ ms`},
		{[]string{"switch", "cli", "--to", "cli-ptp"}, false, `already asks for cli-ptp`},
		{[]string{"switch", "cli", "--to", "cluster"}, false, `NetworkSwitched: Switched eth0 from default/cli-ptp to ` + cluster},
		{[]string{"detach", "cli", "net5"}, false, `RemovedInterface: Removed net5 from default/cli-mv`},
		{[]string{"detach", "cli", "net5"}, true, `has no secondary network or interface "net5"`},
		{[]string{"frobnicate"}, true, `unknown command "frobnicate"`},
	}
	for _, s := range steps {
		out, err := kubectlRewire(t, s.args...)
		if (err != nil) != s.fails {
			t.Fatalf("kubectl rewire %v: error %v, want failure %v; output:\n%s", s.args, err, s.fails, out)
		}
		if !regexp.MustCompile(s.outputs).MatchString(out) {
			t.Fatalf("kubectl rewire %v: output does not match %q:\n%s", s.args, s.outputs, out)
		}
	}
	waitLinks(t, p, "only eth0", func(l map[string]harness.Link) bool { return len(l) == 1 })
	out, err := kubectlRewire(t, "status", "cli", "-o", "json")
	must(t, err)
	var list []netstatus.Status
	must(t, json.Unmarshal([]byte(out), &list))
	if len(list) != 1 || list[0].Name != cluster || !strings.HasPrefix(list[0].IPs[0], e.subnet+".") {
		t.Fatalf("status -o json: %+v", list)
	}
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}
