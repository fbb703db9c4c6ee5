package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/testutils"
	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/rewire-cni/rewire/pkg/dra"
	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// The DRA objects the tests write themselves (no scheduler or DRA driver
// runs here): a ResourceSlice of the node with a NIC publishing the CNI
// attributes and a GPU without them, and a claim of both, allocated to the
// node and reserved for the pod as the scheduler does.
const (
	draDriver   = "nic.rewire.test"
	draResource = "rewire.test/vf"
	draDeviceID = "0000:05:00.1"
)

// draEnv is an env whose delegates run through "recmv": macvlan behind a
// wrapper that keeps the config of its last ADD, i.e. what the delegate was
// given. No kubelet PodResources socket exists: the device comes from the
// claim alone.
func draEnv(t *testing.T, o envOpts) (*env, string) {
	t.Helper()
	wrapDir := t.TempDir()
	stdin := filepath.Join(wrapDir, "add-stdin.json")
	script := fmt.Sprintf(`#!/bin/sh
in=$(cat)
[ "$CNI_COMMAND" = ADD ] && printf '%%s' "$in" > %s
printf '%%s' "$in" | %s/macvlan
`, stdin, tools)
	must(t, os.WriteFile(filepath.Join(wrapDir, "recmv"), []byte(script), 0o755))
	o.binDir = wrapDir
	o.extraConfig += "podResourcesSocket: " + filepath.Join(wrapDir, "no-kubelet.sock") + "\n"
	return newEnv(t, o), stdin
}

// draObjects creates the DeviceClass, the node's ResourceSlice and an
// unallocated claim of a NIC and a GPU in namespace default.
func (e *env) draObjects(claim string) {
	e.t.Helper()
	ctx := context.Background()
	rc := api.Client.ResourceV1()
	class := fmt.Sprintf("rewire-nic-%d", e.n)
	_, err := rc.DeviceClasses().Create(ctx, &resourcev1.DeviceClass{ObjectMeta: metav1.ObjectMeta{Name: class}}, metav1.CreateOptions{})
	must(e.t, err)
	e.t.Cleanup(func() { _ = rc.DeviceClasses().Delete(ctx, class, metav1.DeleteOptions{}) })
	attr := func(s string) resourcev1.DeviceAttribute { return resourcev1.DeviceAttribute{StringValue: &s} }
	node := e.node
	slice := &resourcev1.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: e.node + "-nics"}, Spec: resourcev1.ResourceSliceSpec{
		Driver: draDriver, NodeName: &node, Pool: resourcev1.ResourcePool{Name: e.node, Generation: 1, ResourceSliceCount: 1},
		Devices: []resourcev1.Device{
			{Name: "vf0", Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{
				dra.ResourceNameAttribute: attr(draResource), dra.DeviceIDAttribute: attr(draDeviceID),
				"resource.kubernetes.io/pciBusID": attr(draDeviceID)}},
			{Name: "gpu0", Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{"model": attr("x")}},
		}}}
	_, err = rc.ResourceSlices().Create(ctx, slice, metav1.CreateOptions{})
	must(e.t, err)
	e.t.Cleanup(func() { _ = rc.ResourceSlices().Delete(ctx, slice.Name, metav1.DeleteOptions{}) })
	e.createClaim(claim, class)
}

// createClaim creates an unallocated claim of a NIC and a GPU of class.
func (e *env) createClaim(name, class string) {
	e.t.Helper()
	ctx := context.Background()
	req := func(n string) resourcev1.DeviceRequest {
		return resourcev1.DeviceRequest{Name: n, Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: class}}
	}
	c := &resourcev1.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{req("nic"), req("gpu")}}}}
	_, err := api.Client.ResourceV1().ResourceClaims("default").Create(ctx, c, metav1.CreateOptions{})
	must(e.t, err)
	e.t.Cleanup(func() {
		_ = api.Client.ResourceV1().ResourceClaims("default").Delete(ctx, name, metav1.DeleteOptions{})
	})
}

// allocate writes the claim's allocation (vf0 and gpu0 of node's pool, on
// node) and reserves it for the pod: what the scheduler does.
func allocate(t *testing.T, claim, node string, p *harness.Pod) {
	t.Helper()
	ctx := context.Background()
	claims := api.Client.ResourceV1().ResourceClaims("default")
	c, err := claims.Get(ctx, claim, metav1.GetOptions{})
	must(t, err)
	c.Status.Allocation = &resourcev1.AllocationResult{
		Devices: resourcev1.DeviceAllocationResult{Results: []resourcev1.DeviceRequestAllocationResult{
			{Request: "nic", Driver: draDriver, Pool: node, Device: "vf0"},
			{Request: "gpu", Driver: draDriver, Pool: node, Device: "gpu0"},
		}},
		NodeSelector: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{
			{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}}}}},
	}
	if p != nil {
		c.Status.ReservedFor = []resourcev1.ResourceClaimConsumerReference{{Resource: "pods", Name: p.Name, UID: ktypes.UID(p.UID)}}
	}
	_, err = claims.UpdateStatus(ctx, c, metav1.UpdateOptions{})
	must(t, err)
}

// newClaimPod is newPod for a pod whose container uses the claim.
func (e *env) newClaimPod(name, claim string, annotations map[string]string) *harness.Pod {
	e.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: annotations},
		Spec: corev1.PodSpec{NodeName: e.node,
			ResourceClaims: []corev1.PodResourceClaim{{Name: "nic", ResourceClaimName: &claim}},
			Containers: []corev1.Container{{Name: "c", Image: "busybox",
				Resources: corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "nic"}}}}}},
	}
	created, err := api.Client.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{})
	must(e.t, err)
	netns, err := testutils.NewNS()
	must(e.t, err)
	e.netns.add(netns)
	hp := &harness.Pod{Namespace: "default", Name: name, UID: string(created.UID),
		ContainerID: fmt.Sprintf("c%d-%d-%s", os.Getpid(), e.n, name), NetNS: netns}
	e.t.Cleanup(func() {
		if e.t.Failed() && e.daemon.Running() {
			_ = e.rt.Del(context.Background(), hp)
		}
		_ = netns.Close()
		_ = testutils.UnmountNS(netns)
		_ = api.Client.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return hp
}

// draPod makes the DRA objects, a NAD asking for the NIC's resource and a
// pod with the claim on it; the claim is not allocated yet.
func (e *env) draPod() (claim, network string, p *harness.Pod) {
	e.t.Helper()
	claim, network = fmt.Sprintf("nic-%d", e.n), fmt.Sprintf("dra-net-%d", e.n)
	e.draObjects(claim)
	conf := strings.Replace(e.macvlanConf(network, "192.168.41"), `"type":"macvlan"`, `"type":"recmv"`, 1)
	e.createNAD("default", network, conf, map[string]string{nad.ResourceNameAnnotation: draResource})
	p = e.newClaimPod(fmt.Sprintf("dra-pod-%d", e.n), claim, map[string]string{selection.NetworksAnnotation: network})
	return claim, network, p
}

// addWhenReady runs ADD again while it answers "try again later" (as the
// kubelet does), up to 15 s, and checks that it read nothing from the API.
func addWhenReady(t *testing.T, e *env, p *harness.Pod) {
	t.Helper()
	before, err := e.daemon.Counters()
	must(t, err)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err = e.rt.Add(context.Background(), p); err == nil || cniError(t, err).Code != types.ErrTryAgainLater || time.Now().After(deadline) {
			break
		}
	}
	must(t, err)
	after, err := e.daemon.Counters()
	must(t, err)
	if after["reads"] != before["reads"] {
		t.Errorf("ADD read the API %d times, want 0 (claims and slices come from the informers)", after["reads"]-before["reads"])
	}
}

// draScenario runs a pod with the claim and a network asking for its
// resource: ADD answers "try again later" until the claim is allocated,
// then the delegate gets the NIC's deviceID and the claim's status the
// interface's networkData (nothing for the GPU), which follows hot-plug.
func draScenario(t *testing.T, e *env, stdin string) {
	ctx := context.Background()
	claim, network, p := e.draPod()
	_, err := e.rt.Add(ctx, p)
	if err == nil || cniError(t, err).Code != types.ErrTryAgainLater || !strings.Contains(err.Error(), "try again later") {
		t.Fatalf("ADD before the claim is allocated = %v, want code 11 (try again later)", err)
	}
	if msg := waitEvent(t, p, "NetworkAddFailed"); !strings.Contains(msg, draResource) {
		t.Errorf("NetworkAddFailed Event %q does not name the resource", msg)
	}

	allocate(t, claim, e.node, p)
	addWhenReady(t, e, p)
	given, err := os.ReadFile(stdin)
	must(t, err)
	if !strings.Contains(string(given), `"deviceID":"`+draDeviceID+`"`) {
		t.Errorf("the delegate was not given deviceID %s:\n%s", draDeviceID, given)
	}
	st := networkStatus(t, p)
	if len(st) != 2 || st[1].Interface != "net1" || len(st[1].IPs) != 1 {
		t.Fatalf("network-status = %+v", st)
	}
	want := resourcev1.NetworkDeviceData{InterfaceName: "net1", IPs: []string{st[1].IPs[0] + "/24"}, HardwareAddress: st[1].MAC}
	devices := waitNetworkData(t, claim, 1)
	if got := devices[0]; got.Device != "vf0" || got.Driver != draDriver || got.Pool != e.node || got.NetworkData == nil ||
		!equalNetworkData(*got.NetworkData, want) {
		t.Errorf("claim status.devices = %+v, want vf0 with %+v", devices, want)
	}

	// Hot-plug: unplugging the interface removes its networkData, plugging
	// it again (the same device) writes it again.
	setNetworks(t, p, "")
	waitLinks(t, p, "net1 unplugged", func(l map[string]harness.Link) bool { return len(l) == 1 })
	waitNetworkData(t, claim, 0)
	setNetworks(t, p, network)
	waitLinks(t, p, "net1 plugged", func(l map[string]harness.Link) bool { return len(l) == 2 })
	if devices := waitNetworkData(t, claim, 1); devices[0].Device != "vf0" || devices[0].NetworkData.InterfaceName != "net1" {
		t.Errorf("claim status.devices after the plug = %+v", devices)
	}

	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// A NAD whose resourceName matches a claim's device gets the device's
// k8s.cni.cncf.io/deviceID, and the claim gets the interface's networkData.
func TestDRADeviceIDAndNetworkData(t *testing.T) {
	e, stdin := draEnv(t, envOpts{})
	draScenario(t, e, stdin)
	if log := e.daemon.Log(); strings.Contains(log, "networkData not written") {
		t.Errorf("rewired did not write networkData:\n%s", tail(log, 20))
	}
}

// networkData the claim lost while rewired was down (here: removed by
// hand) is written again when it starts.
func TestDRANetworkDataAfterRestart(t *testing.T) {
	e, _ := draEnv(t, envOpts{})
	claim, _, p := e.draPod()
	allocate(t, claim, e.node, p)
	addWhenReady(t, e, p)
	waitNetworkData(t, claim, 1)
	e.daemon.Stop()
	claims := api.Client.ResourceV1().ResourceClaims("default")
	c, err := claims.Get(context.Background(), claim, metav1.GetOptions{})
	must(t, err)
	c.Status.Devices = nil
	_, err = claims.UpdateStatus(context.Background(), c, metav1.UpdateOptions{})
	must(t, err)
	waitNetworkData(t, claim, 0)
	must(t, e.daemon.Start())
	if devices := waitNetworkData(t, claim, 1); devices[0].Device != "vf0" || devices[0].NetworkData.InterfaceName != "net1" {
		t.Errorf("claim status.devices after the restart = %+v", devices)
	}
	must(t, e.rt.Del(context.Background(), p))
	e.assertNoLeaks()
}

// deploy/'s RBAC and admission policies let rewired, on a token bound to
// its node, read claims and slices and write networkData into its node's
// claims, and nothing more of a claim.
func TestDRAWithDeployRBAC(t *testing.T) {
	root, _ := filepath.Abs("../..")
	out, err := exec.Command(filepath.Join(tools, "kubectl"), "--kubeconfig", api.Kubeconfig, "apply", "-k", filepath.Join(root, "deploy")).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply -k deploy/: %v\n%s", err, out)
	}
	node := "dra-rbac-node"
	kc, tok := nodeKubeconfig(t, node)
	e, stdin := draEnv(t, envOpts{kubeconfig: kc, node: node})
	draScenario(t, e, stdin)
	if log := e.daemon.Log(); containsForbidden(log) {
		t.Errorf("rewired hit a forbidden API call:\n%s", tail(log, 20))
	}

	// What rewired's token may not do to a claim.
	as, err := dynamic.NewForConfig(&rest.Config{Host: api.URL, BearerToken: tok, TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	must(t, err)
	ctx := context.Background()
	own, other := fmt.Sprintf("own-%d", e.n), fmt.Sprintf("other-%d", e.n)
	e.createClaim(own, fmt.Sprintf("rewire-nic-%d", e.n))
	allocate(t, own, node, nil)
	e.createClaim(other, fmt.Sprintf("rewire-nic-%d", e.n))
	allocate(t, other, "elsewhere", nil)
	apply := func(claim, pool string, extra map[string]interface{}) error {
		status := map[string]interface{}{"devices": []interface{}{map[string]interface{}{"driver": draDriver, "pool": pool, "device": "vf0",
			"networkData": map[string]interface{}{"interfaceName": "net9"}}}}
		for k, v := range extra {
			status[k] = v
		}
		_, err := as.Resource(dra.ClaimsGVR).Namespace("default").ApplyStatus(ctx, claim, &unstructured.Unstructured{Object: map[string]interface{}{
			"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": map[string]interface{}{"name": claim, "namespace": "default"},
			"status": status}}, metav1.ApplyOptions{FieldManager: "attacker", Force: true})
		return err
	}
	if err := apply(own, node, nil); err != nil {
		t.Errorf("networkData of a claim of its own node: %v", err)
	}
	denied := map[string]error{
		"networkData of another node's claim": apply(other, "elsewhere", nil),
		"reserving its own node's claim": apply(own, node, map[string]interface{}{"reservedFor": []interface{}{
			map[string]interface{}{"resource": "pods", "name": "x", "uid": "6a4c2d4e-0000-4000-8000-000000000001"}}}),
	}
	_, denied["list secrets"] = as.Resource(corev1.SchemeGroupVersion.WithResource("secrets")).Namespace("kube-system").List(ctx, metav1.ListOptions{})
	for what, err := range denied {
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("%s: want Forbidden, got %v", what, err)
		} else {
			t.Logf("%s: %v", what, err)
		}
	}
}

// waitNetworkData waits for exactly n entries with networkData in the
// claim's status.devices.
func waitNetworkData(t *testing.T, claim string, n int) []resourcev1.AllocatedDeviceStatus {
	t.Helper()
	var last []resourcev1.AllocatedDeviceStatus
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		c, err := api.Client.ResourceV1().ResourceClaims("default").Get(context.Background(), claim, metav1.GetOptions{})
		must(t, err)
		last = nil
		for _, d := range c.Status.Devices {
			if d.NetworkData != nil {
				last = append(last, d)
			}
		}
		if len(last) == n {
			return last
		}
	}
	t.Fatalf("claim %s: status.devices with networkData = %+v, want %d", claim, last, n)
	return nil
}

func equalNetworkData(a, b resourcev1.NetworkDeviceData) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}
