package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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
	node := "rbac-node"
	kc, tok := nodeKubeconfig(t, node)

	e := newEnv(t, envOpts{kubeconfig: kc, node: node})
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
	waitEvent(t, p, "RemovedInterface")
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
	if log := e.daemon.Log(); containsForbidden(log) {
		t.Errorf("rewired hit a forbidden API call:\n%s", tail(log, 20))
	}

	as, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL, BearerToken: tok, TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	must(t, err)
	denied := map[string]error{}
	// deploy/node-restriction.yaml: a pod of another node is not rewired's.
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "other-node-pod", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: "elsewhere", Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	_, err = api.Client.CoreV1().Pods("default").Create(ctx, other, metav1.CreateOptions{})
	must(t, err)
	t.Cleanup(func() { _ = api.Client.CoreV1().Pods("default").Delete(ctx, other.Name, metav1.DeleteOptions{}) })
	patch := []byte(`{"metadata":{"annotations":{"v1.multus-cni.io/default-network":"attacker-net"}}}`)
	// The API server applies an admission policy once its informer has it
	// (a second or so after kubectl apply): wait for that, then check.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := as.CoreV1().Pods("default").Patch(ctx, other.Name, types.MergePatchType, patch, metav1.PatchOptions{})
		if apierrors.IsForbidden(err) || time.Now().After(deadline) {
			break
		}
	}
	_, denied["patch a pod of another node"] = as.CoreV1().Pods("default").Patch(ctx, other.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err := denied["patch a pod of another node"]; err != nil && !strings.Contains(err.Error(), "its own node") {
		t.Errorf("the denial does not say why: %v", err)
	}
	// A token of the account that is not bound to a pod changes no pod.
	unbound, err := api.Client.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "rewire",
		&authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	must(t, err)
	asUnbound, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL, BearerToken: unbound.Status.Token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	must(t, err)
	_, denied["patch with an unbound token"] = asUnbound.CoreV1().Pods("default").Patch(ctx, other.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	_, denied["list secrets"] = as.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	denied["delete pods"] = as.CoreV1().Pods("default").Delete(ctx, "rbac", metav1.DeleteOptions{})
	_, denied["list nodes"] = as.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	for what, err := range denied {
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s: want Forbidden, got %v", what, err)
		}
	}
}

// rewiredToken is a token of rewired's service account bound to a rewired
// pod on node, as the DaemonSet's pods get (the API server puts the node's
// name in it).
func rewiredToken(t testing.TB, node string) string {
	t.Helper()
	ctx := context.Background()
	_, err := api.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Client.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{}) })
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "rewired-" + node, Namespace: "kube-system"},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "rewire", Containers: []corev1.Container{{Name: "rewired", Image: "rewire"}}}}
	created, err := api.Client.CoreV1().Pods("kube-system").Create(ctx, pod, metav1.CreateOptions{})
	must(t, err)
	t.Cleanup(func() { _ = api.Client.CoreV1().Pods("kube-system").Delete(ctx, pod.Name, metav1.DeleteOptions{}) })
	tok, err := api.Client.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "rewire", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: &authenticationv1.BoundObjectReference{
			Kind: "Pod", APIVersion: "v1", Name: created.Name, UID: created.UID}}}, metav1.CreateOptions{})
	must(t, err)
	return tok.Status.Token
}

func containsForbidden(log string) bool {
	return strings.Contains(log, "is forbidden") || strings.Contains(log, "Forbidden")
}

// nodeKubeconfig writes a kubeconfig holding the token rewired's
// ServiceAccount gets on node (rewiredToken) and returns its path and the
// token.
func nodeKubeconfig(t testing.TB, node string) (path, token string) {
	t.Helper()
	token = rewiredToken(t, node)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	must(t, os.WriteFile(kc, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: t, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: rewire, user: {token: %q}}]
contexts: [{name: t, context: {cluster: t, user: rewire}}]
current-context: t
`, api.URL, token)), 0o600))
	return kc, token
}
