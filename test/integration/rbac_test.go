package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// deploy/ applies as users apply it (kubectl apply -k: the API server
// validates every object), and its RBAC is enough for everything rewired does
// — ADD with network-status and Events, and hot-plug — and grants nothing more.
func TestDeployRBACIsSufficientAndLeast(t *testing.T) {
	root, _ := filepath.Abs("../..")
	out, err := exec.Command(filepath.Join(tools, "kubectl"), "--kubeconfig", api.Kubeconfig, "apply", "-k", filepath.Join(root, "deploy")).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply -k deploy/: %v\n%s", err, out)
	}
	ctx := context.Background()
	tok, err := api.Client.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "rewire",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{}}, metav1.CreateOptions{})
	must(t, err)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	must(t, os.WriteFile(kc, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: t, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: rewire, user: {token: %q}}]
contexts: [{name: t, context: {cluster: t, user: rewire}}]
current-context: t
`, api.URL, tok.Status.Token)), 0o600))

	e := newEnv(t, envOpts{kubeconfig: kc})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.35"), nil)
	p := e.newPod("default", "rbac", map[string]string{selection.NetworksAnnotation: "mv"})
	_, err = e.rt.Add(ctx, p)
	must(t, err)
	if st := networkStatus(t, p); len(st) != 2 {
		t.Errorf("network-status = %+v", st)
	}
	waitEvent(t, p, "AddedInterface")
	setNetworks(t, p, "")
	waitLinks(t, p, "net1 unplugged", func(l map[string]harness.Link) bool { return len(l) == 1 })
	waitEvent(t, p, "InterfaceRemoved")
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
	if log := e.daemon.Log(); containsForbidden(log) {
		t.Errorf("rewired hit a forbidden API call:\n%s", tail(log, 20))
	}

	as, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL, BearerToken: tok.Status.Token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	must(t, err)
	denied := map[string]error{}
	_, denied["list secrets"] = as.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	denied["delete pods"] = as.CoreV1().Pods("default").Delete(ctx, "rbac", metav1.DeleteOptions{})
	_, denied["list nodes"] = as.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	for what, err := range denied {
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s: want Forbidden, got %v", what, err)
		}
	}
}

func containsForbidden(log string) bool {
	return strings.Contains(log, "is forbidden") || strings.Contains(log, "Forbidden")
}
