package executor

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/rewire-cni/rewire/pkg/attachment"
	"github.com/rewire-cni/rewire/pkg/store"
)

// delCNI records the DELs it is asked for (the other calls panic).
type delCNI struct {
	libcni.CNI
	mu   sync.Mutex
	dels []*libcni.RuntimeConf
}

func (f *delCNI) DelNetworkList(_ context.Context, _ *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dels = append(f.dels, rt)
	return nil
}

func (f *delCNI) GetCachedAttachments(string) ([]*libcni.NetworkAttachment, error) { return nil, nil }

// DelStale deletes a record through the DEL path only while it is the one
// judged stale: complete and created at the time given.
func TestDelStale(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	conf := []byte(`{"cniVersion":"1.1.0","name":"n1","plugins":[{"type":"bridge"}]}`)
	cases := []struct {
		name     string
		record   *store.Sandbox // nil: none
		created  time.Time
		released bool
	}{
		{"same record", &store.Sandbox{Complete: true, Created: created}, created, true},
		{"another record", &store.Sandbox{Complete: true, Created: created.Add(time.Second)}, created, false},
		{"ADD running", &store.Sandbox{Complete: false, Created: created}, created, false},
		{"no record", nil, created, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := newStore(t)
			if c.record != nil {
				c.record.ContainerID, c.record.NetNS = "c1", "/var/run/netns/gone"
				c.record.Args = [][2]string{{"K8S_POD_NAME", "p"}}
				c.record.Attachments = []store.Attachment{{Spec: attachment.Spec{Network: "n1", IfName: "eth0", Config: conf, Primary: true}, State: store.Added}}
				must(t, st.Commit(c.record))
			}
			f := &delCNI{}
			e := New(f, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
			released, err := e.DelStale(context.Background(), "c1", c.created)
			must(t, err)
			if released != c.released {
				t.Fatalf("DelStale = %v, want %v", released, c.released)
			}
			left, err := st.Get("c1")
			must(t, err)
			if c.released {
				if left != nil || len(f.dels) != 1 || f.dels[0].NetNS != "/var/run/netns/gone" || f.dels[0].IfName != "eth0" ||
					len(f.dels[0].Args) != 1 || f.dels[0].Args[0][1] != "p" {
					t.Fatalf("record left %v, DELs %+v: want the recorded attachment deleted with its netns and args, no record", left, f.dels)
				}
				return
			}
			if len(f.dels) != 0 || (c.record != nil) != (left != nil) {
				t.Fatalf("DELs %+v, record left %v: want nothing deleted", f.dels, left)
			}
		})
	}
}
