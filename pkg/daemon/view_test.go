package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/rewire-cni/rewire/pkg/kube"
)

// GET /debug/pods/NS/NAME answers the cached pod and the resourceVersion
// the last finished reconcile read; 404 for a pod the cache lacks.
func TestPodViewEndpoint(t *testing.T) {
	pods := map[string]*kube.Pod{"shop/web": {Namespace: "shop", Name: "web", UID: "u1", ResourceVersion: "42",
		Labels: map[string]string{"app": "web"}}}
	d := &Daemon{}
	r := NewReconciler(d, func(namespace, name string) *kube.Pod { return pods[namespace+"/"+name] })
	d.View = r.View
	sock := filepath.Join(t.TempDir(), "run", "rewire.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := d.Server()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	get := func(path string) (int, PodView) {
		t.Helper()
		resp, err := hc.Get("http://rewired" + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v PodView
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
				t.Fatal(err)
			}
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
		}
		return resp.StatusCode, v
	}

	if code, v := get("/debug/pods/shop/web"); code != http.StatusOK || v.UID != "u1" || v.ResourceVersion != "42" ||
		v.Labels["app"] != "web" || v.Reconciled != "" {
		t.Errorf("before a reconcile: %d %+v", code, v)
	}
	r.done("shop/web", "41")
	if code, v := get("/debug/pods/shop/web"); code != http.StatusOK || v.Reconciled != "41" {
		t.Errorf("after a reconcile: %d %+v, want reconciled 41", code, v)
	}
	if code, _ := get("/debug/pods/shop/gone"); code != http.StatusNotFound {
		t.Errorf("a pod the cache lacks: %d, want 404", code)
	}
}
