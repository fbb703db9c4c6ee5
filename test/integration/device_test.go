package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/pkg/store"
)

// fakePodResources is a stand-in for the kubelet's PodResources API: the one
// fake this suite allows (no device plugin or kubelet runs here). It reports
// one device of example.com/vf for every pod asked about.
type fakePodResources struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	pods []*podresourcesv1.PodResources
}

func (f *fakePodResources) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	return &podresourcesv1.ListPodResourcesResponse{PodResources: f.pods}, nil
}

// A NAD with a resourceName gets the device the kubelet allocated to the
// pod as deviceID, and the device plugin's device-info shows in
// network-status.
func TestDeviceIDFromPodResources(t *testing.T) {
	const resource, device = "example.com/vf", "0000:03:00.1"
	dir := t.TempDir()
	sock := filepath.Join(dir, "kubelet.sock")
	fake := &fakePodResources{pods: []*podresourcesv1.PodResources{{Name: "with-device", Namespace: "default",
		Containers: []*podresourcesv1.ContainerResources{{Name: "c", Devices: []*podresourcesv1.ContainerDevices{
			{ResourceName: resource, DeviceIds: []string{device}}}}}}}}
	l, err := net.Listen("unix", sock)
	must(t, err)
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, fake)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)

	e := newEnv(t, envOpts{extraConfig: "podResourcesSocket: " + sock + "\n"})
	devInfo := `{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:00.1"}}`
	dpFile := filepath.Join(e.dir, "devinfo", "dp", "example.com-vf-0000:03:00.1-device.json")
	must(t, os.MkdirAll(filepath.Dir(dpFile), 0o755))
	must(t, os.WriteFile(dpFile, []byte(devInfo), 0o444))
	e.createNAD("default", "vf-net", e.macvlanConf("vf-net", "192.168.11"), map[string]string{nad.ResourceNameAnnotation: resource})

	p := e.newPod("default", "with-device", map[string]string{selection.NetworksAnnotation: "vf-net"})
	ctx := context.Background()
	_, err = e.rt.Add(ctx, p)
	must(t, err)

	_, raw := completedRecord(t, e, p)
	var sb store.Sandbox
	must(t, json.Unmarshal(raw, &sb))
	if a := sb.Find("net1"); a == nil || a.DeviceID != device || !strings.Contains(string(a.Config), `"deviceID":"`+device+`"`) {
		t.Errorf("net1 was not given device %s: %+v", device, a)
	}
	st := networkStatus(t, p)
	var compact bytes.Buffer
	if len(st) == 2 {
		_ = json.Compact(&compact, st[1].DeviceInfo)
	}
	if compact.String() != devInfo {
		t.Errorf("network-status device-info = %s, want %s", st[1].DeviceInfo, devInfo)
	}
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}
