package selfgc

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeRuntime serves ListPodSandbox only, and remembers its filter.
type fakeRuntime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	items  []*runtimeapi.PodSandbox
	filter *runtimeapi.PodSandboxFilter
}

func (f *fakeRuntime) ListPodSandbox(_ context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f.filter = req.GetFilter()
	return &runtimeapi.ListPodSandboxResponse{Items: f.items}, nil
}

// The client asks for every sandbox (no filter: any state) over the unix
// socket, in both endpoint forms, and returns their IDs and pods.
func TestCRIListSandboxes(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeRuntime{items: []*runtimeapi.PodSandbox{
		{Id: "a", State: runtimeapi.PodSandboxState_SANDBOX_READY, Metadata: &runtimeapi.PodSandboxMetadata{Namespace: "ns", Name: "p", Uid: "u"}},
		{Id: "b", State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY},
	}}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, fake)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)

	for _, endpoint := range []string{"unix://" + sock, sock} {
		c, err := NewCRI(endpoint)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.ListSandboxes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		want := []Sandbox{{ID: "a", Namespace: "ns", Name: "p", UID: "u"}, {ID: "b"}}
		if !slices.Equal(got, want) || fake.filter != nil {
			t.Errorf("%s: ListSandboxes = %+v (filter %v), want %+v and no filter", endpoint, got, fake.filter, want)
		}
	}
	// Nobody listening: an error, never an empty list.
	c, _ := NewCRI(filepath.Join(t.TempDir(), "none.sock"))
	if got, err := c.ListSandboxes(context.Background()); err == nil {
		t.Errorf("no runtime: ListSandboxes = %v, want an error", got)
	}
}

func TestNewCRIEndpoints(t *testing.T) {
	for endpoint, want := range map[string]string{
		"unix:///run/containerd/containerd.sock": "",
		"/var/run/crio/crio.sock":                "",
		"tcp://10.0.0.1:1234":                    "only unix sockets",
		"unix://relative.sock":                   "absolute path",
		"run/x.sock":                             "absolute path",
	} {
		_, err := NewCRI(endpoint)
		if (want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("NewCRI(%q) = %v, want %q", endpoint, err, want)
		}
	}
}
