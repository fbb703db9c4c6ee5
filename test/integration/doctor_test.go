package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// rewired publishes its self-check on its own pod and "kubectl rewire
// doctor" reports it: first a node whose runtime would not call Rewire and
// whose bin dirs lack the plugin, then the same node fixed.
func TestDoctor(t *testing.T) {
	e := newEnv(t, envOpts{noStart: true})
	ctx := context.Background()
	podName := "rewired-" + e.node
	_, err := api.Client.CoreV1().Pods("rw-system").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: "rw-system", Labels: map[string]string{"app": "rewire"}},
		Spec:       corev1.PodSpec{NodeName: e.node, Containers: []corev1.Container{{Name: "rewired", Image: "rewire:dev"}}},
	}, metav1.CreateOptions{})
	must(t, err)
	t.Cleanup(func() {
		_ = api.Client.CoreV1().Pods("rw-system").Delete(context.Background(), podName, metav1.DeleteOptions{})
	})
	e.daemon.ExtraArgs = []string{"--pod-name", podName, "--pod-namespace", "rw-system", "--doctor-interval", "300ms"}
	must(t, e.daemon.Start())

	doctor := func() (string, error) { return kubectlRewire(t, "doctor", e.node, "--daemon-namespace", "rw-system") }
	waitDoctor := func(healthy bool, want ...string) {
		t.Helper()
		var out string
		var err error
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			out, err = doctor()
			ok := (err == nil) == healthy
			for _, w := range want {
				ok = ok && strings.Contains(out, w)
			}
			if ok {
				return
			}
		}
		t.Fatalf("doctor (error %v) does not say %q:\n%s", err, want, out)
	}
	waitDoctor(false,
		"ok    cluster network   1 network(s) answer STATUS",
		"FAIL  cni config first  the runtime's first CNI config is 10-cluster.conflist, not Rewire's",
		"FAIL  plugin binaries   not found in ["+tools+"]: rewire",
		"ok    store             0 sandbox record(s), none damaged")

	// Fix the node: Rewire's config first, the plugin in a bin dir.
	confDir := filepath.Join(e.dir, "net.d")
	must(t, os.WriteFile(filepath.Join(confDir, "00-rewire.conflist"),
		[]byte(`{"cniVersion":"1.1.0","name":"rewire","plugins":[{"type":"rewire"}]}`), 0o644))
	must(t, writeConfig(e, fmt.Sprintf("clusterNetwork: %s\nconfDir: %s\nbinDirs: [%s, %s]\n", confDir, confDir, binDir, tools)))
	e.daemon.Stop()
	must(t, e.daemon.Start())
	waitDoctor(true, "ok    cni config first  Rewire's config is first in "+confDir, "ok    plugin binaries   rewire, bridge, portmap found")
}
