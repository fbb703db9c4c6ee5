// Package chart checks the Helm chart (charts/rewire) with the real helm
// (built by hack/build-tools.sh, or REWIRE_TOOLS_DIR): it lints, it renders
// the same objects as `kubectl kustomize deploy/` with its default values, and
// its values change what they say. make e2e installs, upgrades and uninstalls
// it on the real node (test/e2e).
package chart

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/rewire-cni/rewire/test/harness"
)

var (
	root  string
	tools string
)

func TestMain(m *testing.M) {
	root, _ = filepath.Abs("../..")
	var err error
	if tools, err = harness.ToolsDir(root); err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// tool runs a binary of the tools dir (helm, kubectl) in the repository's
// root; a missing binary fails the test.
func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runTool(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func runTool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(tools, name)
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s not in the tools dir %s (hack/build-tools.sh builds it): %v", name, tools, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), nil
}

// objects parses a multi-document YAML stream into objects keyed by
// kind/namespace/name. The config.yaml of a ConfigMap is parsed too (YAML
// in a string: compared by meaning, not by layout).
func objects(t *testing.T, stream string) map[string]map[string]any {
	t.Helper()
	objs := map[string]map[string]any{}
	dec := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	for {
		doc, err := dec.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		var o map[string]any
		if err := json.Unmarshal(js, &o); err != nil {
			t.Fatal(err)
		}
		if o == nil {
			continue // an empty document (comments only)
		}
		md, _ := o["metadata"].(map[string]any)
		key := fmt.Sprintf("%v/%v/%v", o["kind"], md["namespace"], md["name"])
		if md["namespace"] == nil {
			key = fmt.Sprintf("%v//%v", o["kind"], md["name"])
		}
		if _, dup := objs[key]; dup {
			t.Fatalf("%s twice", key)
		}
		if data, ok := o["data"].(map[string]any); ok && o["kind"] == "ConfigMap" {
			for k, v := range data {
				if s, ok := v.(string); ok && strings.HasSuffix(k, ".yaml") {
					var parsed any
					if err := yaml.Unmarshal([]byte(s), &parsed); err != nil {
						t.Fatalf("%s: %s: %v", key, k, err)
					}
					data[k] = parsed
				}
			}
		}
		objs[key] = o
	}
	return objs
}

// diff lists where a and b differ (JSON paths), at most a few.
func diff(path string, a, b any, out *[]string) {
	if len(*out) > 20 {
		return
	}
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		keys := map[string]bool{}
		for k := range av {
			keys[k] = true
		}
		for k := range bv {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			diff(path+"."+k, av[k], bv[k], out)
		}
		return
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			break
		}
		for i := range av {
			diff(fmt.Sprintf("%s[%d]", path, i), av[i], bv[i], out)
		}
		return
	}
	if !reflect.DeepEqual(a, b) {
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		*out = append(*out, fmt.Sprintf("%s: %s != %s", path, ja, jb))
	}
}

func keys(m map[string]map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func render(t *testing.T, args ...string) map[string]map[string]any {
	t.Helper()
	return objects(t, tool(t, "helm", append([]string{"template", "rewire", "charts/rewire", "--namespace", "kube-system"}, args...)...))
}

func TestLint(t *testing.T) {
	out := tool(t, "helm", "lint", "--strict", "charts/rewire")
	t.Logf("helm lint --strict charts/rewire:\n%s", out)
	out = tool(t, "helm", "lint", "--strict", "charts/rewire", "--namespace", "rewire-system",
		"--set", "metrics.enabled=true,metrics.serviceMonitor.enabled=true,nodeRestriction.enabled=false,priorityClassName=")
	t.Logf("with metrics, a ServiceMonitor, no admission policy:\n%s", out)
}

// With its default values the chart renders exactly the objects of deploy/
// (with the CRDs, which it installs from its crds/ dir), installed in
// kube-system as deploy/ is.
func TestDefaultsRenderDeploy(t *testing.T) {
	want := objects(t, tool(t, "kubectl", "kustomize", "deploy/"))
	got := render(t, "--include-crds")
	if !slices.Equal(keys(got), keys(want)) {
		t.Fatalf("the chart renders\n  %s\ndeploy/ has\n  %s", strings.Join(keys(got), "\n  "), strings.Join(keys(want), "\n  "))
	}
	for _, k := range keys(want) {
		var d []string
		diff("", got[k], want[k], &d)
		if len(d) > 0 {
			t.Errorf("%s differs (chart != deploy/):\n  %s", k, strings.Join(d, "\n  "))
		}
	}
	if !t.Failed() {
		t.Logf("%d objects equal: %s", len(want), strings.Join(keys(want), ", "))
	}
}

func daemonSet(t *testing.T, objs map[string]map[string]any, ns, name string) map[string]any {
	t.Helper()
	ds, ok := objs["DaemonSet/"+ns+"/"+name]
	if !ok {
		t.Fatalf("no DaemonSet %s/%s in %v", ns, name, keys(objs))
	}
	return ds
}

// get walks a path of map keys and list indexes.
func get(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch p := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not an object at %q", path, p)
			}
			v = m[p]
		case int:
			l, ok := v.([]any)
			if !ok || p >= len(l) {
				t.Fatalf("%v: no item %d", path, p)
			}
			v = l[p]
		}
	}
	return v
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestValues(t *testing.T) {
	objs := objects(t, tool(t, "helm", "template", "net", "charts/rewire", "--namespace", "rewire-system",
		"--set", "image.repository=registry.example/rewire,image.tag=v1.2.3,image.pullPolicy=Always",
		"--set", "config.logLevel=debug,config.namespaceIsolation=false",
		"--set", "resources.limits.memory=1Gi",
		"--set", "nodeRestriction.enabled=false",
		"--set", "metrics.enabled=true,metrics.port=9999,metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.labels.release=prom",
		"--set", "priorityClassName=",
		"--set", "cni.binDir=/home/kubernetes/bin",
		"--set-json", `tolerations=[{"key":"net","operator":"Equal","value":"x","effect":"NoSchedule"}]`))
	want := []string{
		"ClusterRole//net-rewire", "ClusterRoleBinding//net-rewire", "ConfigMap/rewire-system/net-rewire-config",
		"DaemonSet/rewire-system/net-rewire", "Service/rewire-system/net-rewire-metrics",
		"ServiceAccount/rewire-system/net-rewire", "ServiceMonitor/rewire-system/net-rewire",
	}
	if !slices.Equal(keys(objs), want) {
		t.Fatalf("objects %v, want %v", keys(objs), want)
	}
	ds := daemonSet(t, objs, "rewire-system", "net-rewire")
	pod := get(t, ds, "spec", "template", "spec")
	c := get(t, pod, "containers", 0)
	for _, ct := range []any{c, get(t, pod, "initContainers", 0)} {
		if img := get(t, ct, "image"); img != "registry.example/rewire:v1.2.3" {
			t.Errorf("image %v", img)
		}
		if p := get(t, ct, "imagePullPolicy"); p != "Always" {
			t.Errorf("imagePullPolicy %v", p)
		}
	}
	if cmd := js(get(t, c, "command")); !strings.HasSuffix(cmd, `"--metrics-addr",":9999"]`) {
		t.Errorf("command %s, want --metrics-addr :9999", cmd)
	}
	if p := js(get(t, c, "ports")); p != `[{"containerPort":9999,"name":"metrics","protocol":"TCP"}]` {
		t.Errorf("ports %s", p)
	}
	if r := js(get(t, c, "resources")); r != `{"limits":{"memory":"1Gi"},"requests":{"cpu":"50m","memory":"48Mi"}}` {
		t.Errorf("resources %s", r)
	}
	if p := get(t, pod, "priorityClassName"); p != nil {
		t.Errorf("priorityClassName %v, want none", p)
	}
	if tol := js(get(t, pod, "tolerations")); tol != `[{"effect":"NoSchedule","key":"net","operator":"Equal","value":"x"}]` {
		t.Errorf("tolerations %s", tol)
	}
	if sa := get(t, pod, "serviceAccountName"); sa != "net-rewire" {
		t.Errorf("serviceAccountName %v", sa)
	}
	if v := js(get(t, pod, "volumes")); !strings.Contains(v, `"path":"/home/kubernetes/bin"`) || !strings.Contains(v, `{"configMap":{"name":"net-rewire-config"},"name":"config"}`) {
		t.Errorf("volumes %s", v)
	}
	if sel := js(get(t, ds, "spec", "selector")); sel != `{"matchLabels":{"app":"rewire"}}` {
		t.Errorf("selector %s", sel)
	}
	cfg := get(t, objs["ConfigMap/rewire-system/net-rewire-config"], "data", "config.yaml")
	if js(cfg) != `{"binDirs":["/host/opt/cni/bin"],"clusterNetwork":"/host/etc/cni/net.d","confDir":"/host/etc/cni/net.d","globalNamespaces":["default"],"logLevel":"debug","namespaceIsolation":false}` {
		t.Errorf("config.yaml %s", js(cfg))
	}
	if s := js(get(t, objs["ClusterRoleBinding//net-rewire"], "subjects")); s != `[{"kind":"ServiceAccount","name":"net-rewire","namespace":"rewire-system"}]` {
		t.Errorf("subjects %s", s)
	}
	svc := objs["Service/rewire-system/net-rewire-metrics"]
	if s := js(get(t, svc, "spec")); s != `{"clusterIP":"None","ports":[{"name":"metrics","port":9999,"protocol":"TCP","targetPort":"metrics"}],"selector":{"app":"rewire"}}` {
		t.Errorf("Service spec %s", s)
	}
	sm := objs["ServiceMonitor/rewire-system/net-rewire"]
	if l := js(get(t, sm, "metadata", "labels")); l != `{"app":"rewire","release":"prom"}` {
		t.Errorf("ServiceMonitor labels %s", l)
	}
	if e := js(get(t, sm, "spec", "endpoints", 0, "port")); e != `"metrics"` {
		t.Errorf("ServiceMonitor endpoint port %s", e)
	}

	// The admission policy names the release's ServiceAccount.
	objs = objects(t, tool(t, "helm", "template", "net", "charts/rewire", "--namespace", "rewire-system"))
	expr := get(t, objs["ValidatingAdmissionPolicy//net-rewire-own-node-pods"], "spec", "matchConditions", 0, "expression")
	if expr != "request.userInfo.username == 'system:serviceaccount:rewire-system:net-rewire'" {
		t.Errorf("policy matches %v", expr)
	}
	if p := get(t, objs["ValidatingAdmissionPolicyBinding//net-rewire-own-node-pods"], "spec", "policyName"); p != "net-rewire-own-node-pods" {
		t.Errorf("binding's policy %v", p)
	}
	if _, ok := objs["Service/rewire-system/net-rewire-metrics"]; ok {
		t.Errorf("a metrics Service without metrics.enabled")
	}

	// The pod's scheduling and metadata values.
	objs = objects(t, tool(t, "helm", "template", "rewire", "charts/rewire", "--namespace", "kube-system",
		"--set", "podLabels.team=net,podAnnotations.note=x,nodeSelector.cni=rewire,imagePullSecrets[0].name=reg",
		"--set", "updateStrategy.rollingUpdate.maxUnavailable=2,cni.confDir=/etc/cni/multus.d",
		"--set-json", `affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"cni","operator":"Exists"}]}]}}}`))
	ds = daemonSet(t, objs, "kube-system", "rewire")
	for path, want := range map[string]string{
		"spec.template.metadata.labels":       `{"app":"rewire","team":"net"}`,
		"spec.template.metadata.annotations":  `{"note":"x"}`,
		"spec.template.spec.nodeSelector":     `{"cni":"rewire"}`,
		"spec.template.spec.imagePullSecrets": `[{"name":"reg"}]`,
		"spec.updateStrategy":                 `{"rollingUpdate":{"maxUnavailable":2}}`,
		"spec.template.spec.affinity":         `{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"cni","operator":"Exists"}]}]}}}`,
		"spec.selector":                       `{"matchLabels":{"app":"rewire"}}`,
	} {
		var p []any
		for _, k := range strings.Split(path, ".") {
			p = append(p, k)
		}
		if got := js(get(t, ds, p...)); got != want {
			t.Errorf("%s = %s, want %s", path, got, want)
		}
	}
	if v := js(get(t, ds, "spec", "template", "spec", "volumes")); !strings.Contains(v, `{"hostPath":{"path":"/etc/cni/multus.d","type":"DirectoryOrCreate"},"name":"cni-conf"}`) {
		t.Errorf("volumes %s", v)
	}

	// A ServiceMonitor without the endpoint is refused.
	if out, err := runTool(t, "helm", "template", "rewire", "charts/rewire", "--set", "metrics.serviceMonitor.enabled=true"); err == nil ||
		!strings.Contains(err.Error(), "metrics.serviceMonitor.enabled needs metrics.enabled") {
		t.Errorf("serviceMonitor without metrics: %v\n%s", err, out)
	}
}

// The chart installs, upgrades and uninstalls with the real helm on a real
// kube-apiserver (no kubelet: make e2e runs it on a real node): the API
// server accepts every object (schemas, the admission policy's CEL), helm
// installs the CRDs from crds/, an upgrade changes the DaemonSet, uninstall
// removes the release's objects and leaves the CRDs.
func TestHelmOnAPIServer(t *testing.T) {
	api, err := harness.StartAPIServer(tools, filepath.Join(t.TempDir(), "api"))
	if err != nil {
		t.Fatal(err)
	}
	defer api.Stop()
	kc := "--kubeconfig=" + api.Kubeconfig
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: node-a, containers: [{name: c, image: busybox:e2e}]}\n"
	chartObjs := []string{"daemonset/rewire", "configmap/rewire-config", "serviceaccount/rewire", "service/rewire-metrics",
		"clusterrole/rewire", "clusterrolebinding/rewire",
		"validatingadmissionpolicy/rewire-own-node-pods", "validatingadmissionpolicybinding/rewire-own-node-pods"}
	get := func(more ...string) (string, error) {
		return runTool(t, "kubectl", append([]string{kc, "-n", "kube-system", "get"}, more...)...)
	}

	t.Log(tool(t, "helm", kc, "install", "rewire", "charts/rewire", "-n", "kube-system", "--set", "metrics.enabled=true"))
	for _, o := range append(chartObjs, "crd/network-attachment-definitions.k8s.cni.cncf.io", "crd/networkmigrations.rewire.io") {
		if _, err := get(o); err != nil {
			t.Error(err)
		}
	}
	// The policy keeps rewired's ServiceAccount (with the chart's RBAC) off
	// a pod when its token is not bound to the pod's node.
	podFile := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(podFile, []byte(pod), 0o600); err != nil {
		t.Fatal(err)
	}
	tool(t, "kubectl", kc, "-n", "default", "create", "-f", podFile)
	annotate := func() (string, error) {
		return runTool(t, "kubectl", kc, "-n", "default", "--as=system:serviceaccount:kube-system:rewire",
			"annotate", "pod", "p", "--overwrite", "rewire-test=x")
	}
	eventually(t, func() error {
		if _, err := annotate(); err == nil || !strings.Contains(err.Error(), "rewired may only change pods of its own node: pod p runs on node-a, the token is not bound to a node") {
			return fmt.Errorf("annotate as rewired's ServiceAccount: %v", err)
		}
		return nil
	})

	t.Log(tool(t, "helm", kc, "upgrade", "rewire", "charts/rewire", "-n", "kube-system", "--set", "image.tag=next,nodeRestriction.enabled=false"))
	if img, _ := get("daemonset/rewire", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.initContainers[0].image}"); img != "rewire:next rewire:next" {
		t.Errorf("images after the upgrade: %q", img)
	}
	if out, err := get("service/rewire-metrics", "--ignore-not-found", "-o", "name"); err != nil || out != "" {
		t.Errorf("the metrics Service after an upgrade without metrics: %q %v", out, err)
	}
	// Without the policy, RBAC alone lets rewired's ServiceAccount patch any pod.
	eventually(t, func() error { _, err := annotate(); return err })

	t.Log(tool(t, "helm", kc, "uninstall", "rewire", "-n", "kube-system"))
	for _, o := range chartObjs {
		if out, err := get(o, "--ignore-not-found", "-o", "name"); err != nil || out != "" {
			t.Errorf("%s after helm uninstall: %q %v", o, out, err)
		}
	}
	if _, err := get("crd/network-attachment-definitions.k8s.cni.cncf.io", "crd/networkmigrations.rewire.io"); err != nil {
		t.Errorf("the CRDs went with the release: %v", err)
	}
}

func eventually(t *testing.T, f func() error) {
	t.Helper()
	var err error
	for range 100 {
		if err = f(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal(err)
}
