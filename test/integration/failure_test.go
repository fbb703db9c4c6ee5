package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/pkg/store"
	"github.com/rewire-cni/rewire/test/harness"
)

func cniError(t *testing.T, err error) *types.Error {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("want a CNI error, got %v", err)
	}
	return te
}

// Bad input is refused before anything is created, with a CNI error and an
// Event that say why. (strictCapabilities: an ips request for a network
// without the capability is refused rather than passed in CNI_ARGS.)
func TestBadInputRejected(t *testing.T) {
	e := newEnv(t, envOpts{extraConfig: "namespaceIsolation: true\nstrictCapabilities: true\n"})
	e.createNAD("isolated", "mv", e.macvlanConf("mv", "192.168.3"), nil)
	e.createNAD("other", "elsewhere", e.macvlanConf("elsewhere", "192.168.4"), nil)
	cases := []struct{ name, networks, want string }{
		{"malformed-json", `[{"name":"mv"`, "invalid JSON"},
		{"unknown-network", "nope", "isolated/nope: NetworkAttachmentDefinition isolated/nope not found"},
		{"bad-ifname", `[{"name":"mv","interface":"a/b"}]`, `interface "a/b"`},
		{"too-long-ifname", "mv@abcdefghijklmnop", "interface \"abcdefghijklmnop\""},
		{"duplicate-ifname", "mv@data,mv@data", `interface name "data" requested by both`},
		{"ips-and-claim", `[{"name":"mv","ips":["192.168.3.9/24"],"ipam-claim-reference":"c"}]`, "mutually exclusive"},
		{"missing-capability", `[{"name":"mv","ips":["192.168.3.9/24"]}]`, `no plugin of the network declares the "ips" capability`},
		{"forbidden-namespace", "other/elsewhere", "namespace isolation"},
		{"bad-mac", `[{"name":"mv","mac":"zz"}]`, "mac"},
		{"bad-default-route", `[{"name":"mv","default-route":["nope"]}]`, "default-route"},
		{"two-ats", "mv@a@b", "more than one '@'"},
		{"empty-namespace", "/mv", "empty namespace"},
		{"uppercase-name", "Mv", `name "Mv"`},
		{"bad-port", `[{"name":"mv","portMappings":[{"hostPort":1,"containerPort":0}]}]`, "portMappings"},
		{"two-default-routes", `[{"name":"mv","default-route":["192.168.3.1"]},{"name":"mv","default-route":["192.168.3.1"]}]`, "more than one network"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := e.newPod("isolated", "bad-"+c.name, map[string]string{selection.NetworksAnnotation: c.networks})
			_, err := e.rt.Add(context.Background(), p)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			te := cniError(t, err)
			if te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, c.want) {
				t.Errorf("error = code %d %q, want code 7 containing %q", te.Code, te.Msg, c.want)
			}
			if msg := waitEvent(t, p, "NetworkAddFailed"); !strings.Contains(msg, c.want) {
				t.Errorf("event = %q", msg)
			}
			if links, _ := podLinks(t, p); len(links) != 0 {
				t.Errorf("interfaces created: %v", keys(links))
			}
			must(t, e.rt.Del(context.Background(), p))
			e.assertNoLeaks()
		})
	}
}

// A delegate failing in the middle of an ADD: the networks added before it
// are deleted again and the error names the failing network.
func TestDelegateFailureRollsBack(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "ok", e.macvlanConf("ok", "192.168.5"), nil)
	e.createNAD("default", "broken", `{"cniVersion":"1.0.0","name":"broken","type":"macvlan","master":"nosuchdev0",
		"ipam":{"type":"host-local","dataDir":"`+e.ipamDir+`","subnet":"192.168.6.0/24"}}`, nil)
	p := e.newPod("default", "rollback", map[string]string{selection.NetworksAnnotation: "ok,broken"})
	_, err := e.rt.Add(context.Background(), p)
	if err == nil {
		t.Fatal("ADD succeeded")
	}
	if te := cniError(t, err); !strings.Contains(te.Msg, "network default/broken (interface net2)") {
		t.Errorf("error should name the failing network: %q", te.Msg)
	}
	if links, _ := podLinks(t, p); len(links) != 0 {
		t.Errorf("interfaces left after a failed ADD: %v", keys(links))
	}
	waitEvent(t, p, "NetworkAddFailed")
	e.assertNoLeaks()
	must(t, e.rt.Del(context.Background(), p))
}

// DEL works from the store when the API server is down, and the
// network-status of an ADD made during the outage is written once it is back.
func TestAPIServerOutage(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.7"), nil)
	p1 := e.newPod("default", "outage-1", map[string]string{selection.NetworksAnnotation: "mv"})
	p2 := e.newPod("default", "outage-2", map[string]string{selection.NetworksAnnotation: "mv"})
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p1)
	must(t, err)
	networkStatus(t, p1)

	api.StopAPIServer()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			must(t, api.StartAgain())
		}
	})
	must(t, e.rt.Del(ctx, p1))
	_, err = e.rt.Add(ctx, p2) // pod and NAD come from the informer caches
	must(t, err)
	must(t, api.StartAgain())
	restarted = true

	if st := networkStatus(t, p2); len(st) != 2 {
		t.Errorf("network-status after outage = %+v", st)
	}
	must(t, e.rt.Del(ctx, p2))
	e.assertNoLeaks()
}

// A daemon killed after the delegates ran but before the ADD was recorded
// complete: on restart the ADD is rolled back (the runtime saw it fail).
func TestRestartRollsBackInterruptedAdd(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.8"), nil)
	p := e.newPod("default", "interrupted", map[string]string{selection.NetworksAnnotation: "mv"})
	_, err := e.rt.Add(context.Background(), p)
	must(t, err)
	path, raw := completedRecord(t, e, p)
	e.daemon.Kill()
	// Put the record back in the state a crash before its last write leaves.
	var sb store.Sandbox
	must(t, json.Unmarshal(raw, &sb))
	sb.Complete = false
	raw, _ = json.Marshal(sb)
	must(t, os.WriteFile(path, raw, 0o600))

	must(t, e.daemon.Start())
	if links, _ := podLinks(t, p); len(links) != 0 {
		t.Errorf("interfaces left after recovery: %v", keys(links))
	}
	if ips := e.allocations(); len(ips) != 0 {
		t.Errorf("IPs still allocated after recovery: %v", ips)
	}
	must(t, e.rt.Del(context.Background(), p))
	e.assertNoLeaks()
}

// A damaged record: DEL still removes every attachment libcni's cache
// identifies and releases their IPs.
func TestDamagedRecordDel(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.9"), nil)
	p := e.newPod("default", "damaged", map[string]string{selection.NetworksAnnotation: "mv"})
	_, err := e.rt.Add(context.Background(), p)
	must(t, err)
	path, _ := completedRecord(t, e, p)
	must(t, os.WriteFile(path, []byte(`{"containerID": "`+p.ContainerID+`", "attachm`), 0o600))

	must(t, e.rt.Del(context.Background(), p))
	if links, _ := podLinks(t, p); len(links) != 0 {
		t.Errorf("interfaces left after DEL of a damaged record: %v", keys(links))
	}
	e.assertNoLeaks()
	if _, err := os.Stat(filepath.Join(e.daemon.StateDir, "damaged", p.ContainerID+".json")); err != nil {
		t.Errorf("damaged record not kept aside: %v", err)
	}
}

// With the daemon down the plugin answers "try again later" (code 11) in
// bounded time, and never reports a DEL it could not do as done.
func TestDaemonDown(t *testing.T) {
	e := newEnv(t, envOpts{})
	p := e.newPod("default", "daemon-down", nil)
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	e.daemon.Kill()

	start := time.Now()
	err = e.rt.Del(ctx, p)
	if err == nil || cniError(t, err).Code != types.ErrTryAgainLater {
		t.Fatalf("DEL with the daemon down = %v, want code 11", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("plugin waited %s", d)
	}
	p2 := e.newPod("default", "daemon-down-2", nil)
	if _, err := e.rt.Add(ctx, p2); err == nil || cniError(t, err).Code != types.ErrTryAgainLater {
		t.Fatalf("ADD with the daemon down = %v, want code 11", err)
	}
	must(t, e.daemon.Start())
	must(t, e.rt.Del(ctx, p))
	must(t, e.rt.Del(ctx, p2))
	e.assertNoLeaks()
}

// With no daemon on the node (Rewire uninstalled, its socket gone) a DEL is
// still done, from the store, by rewired's copy next to the plugin: the pod
// stays deletable and nothing leaks; an ADD says "try again later".
func TestDelWithoutDaemon(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.71"), nil)
	p := e.newPod("default", "no-daemon", map[string]string{selection.NetworksAnnotation: "mv"})
	ctx := context.Background()
	_, err := e.rt.Add(ctx, p)
	must(t, err)
	e.daemon.Stop() // graceful: the socket goes
	if _, err := os.Stat(e.daemon.Socket); !os.IsNotExist(err) {
		t.Fatalf("socket after the daemon stopped: %v", err)
	}
	p2 := e.newPod("default", "no-daemon-2", nil)
	if _, err := e.rt.Add(ctx, p2); err == nil || cniError(t, err).Code != types.ErrTryAgainLater {
		t.Fatalf("ADD without a daemon = %v, want code 11", err)
	}
	must(t, e.rt.Del(ctx, p))
	must(t, e.rt.Del(ctx, p)) // idempotent
	must(t, e.rt.Del(ctx, p2))
	if links, _ := harness.Links(p.NetNS); len(links) != 0 {
		t.Fatalf("pod interfaces left: %v", keys(links))
	}
	e.assertNoLeaks()
}

// Until the cluster network's config exists, ADD says "try again later"
// and STATUS says the plugin is not available.
func TestReadinessWaitsForClusterNetwork(t *testing.T) {
	e := newEnv(t, envOpts{noStart: true})
	conf := filepath.Join(e.dir, "net.d", "10-cluster.conflist")
	saved, err := os.ReadFile(conf)
	must(t, err)
	must(t, os.Remove(conf))
	must(t, e.daemon.Start())
	ctx := context.Background()
	p := e.newPod("default", "early", nil)
	if _, err := e.rt.Add(ctx, p); err == nil || cniError(t, err).Code != types.ErrTryAgainLater {
		t.Fatalf("ADD before the cluster network exists = %v, want code 11", err)
	}
	if err := e.rt.Status(ctx); err == nil || cniError(t, err).Code != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS before the cluster network exists = %v, want code 50", err)
	}
	must(t, os.WriteFile(conf, saved, 0o644))
	must(t, e.daemon.WaitReady(5*time.Second))
	must(t, e.rt.Status(ctx))
	_, err = e.rt.Add(ctx, p)
	must(t, err)
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}

// GC deletes the sandboxes the runtime no longer knows, secondaries
// included, and keeps the live ones.
func TestGC(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.createNAD("default", "mv", e.macvlanConf("mv", "192.168.10"), nil)
	live := e.newPod("default", "gc-live", map[string]string{selection.NetworksAnnotation: "mv"})
	gone := e.newPod("default", "gc-gone", map[string]string{selection.NetworksAnnotation: "mv"})
	ctx := context.Background()
	for _, p := range []*harnessPod{live, gone} {
		_, err := e.rt.Add(ctx, p)
		must(t, err)
	}
	must(t, e.rt.GC(ctx, live))
	if links, _ := podLinks(t, gone); len(links) != 0 {
		t.Errorf("GC left interfaces of a stale sandbox: %v", keys(links))
	}
	if links, _ := podLinks(t, live); len(links) != 2 {
		t.Errorf("GC touched a live sandbox: %v", keys(links))
	}
	must(t, e.rt.Check(ctx, live))
	must(t, e.rt.Del(ctx, live))
	e.assertNoLeaks()
}

// completedRecord waits until the pod's record file holds its completed
// ADD (rewired writes record files behind its answers) and returns the
// file's path and content.
func completedRecord(t *testing.T, e *env, p *harnessPod) (path string, raw []byte) {
	t.Helper()
	path = recordPath(e, p)
	pollUntil(t, 10*time.Second, "the completed record file of "+p.Name, func() error {
		var err error
		if raw, err = os.ReadFile(path); err != nil {
			return err
		}
		var sb store.Sandbox
		if err := json.Unmarshal(raw, &sb); err != nil || !sb.Complete {
			return fmt.Errorf("not the completed record (%v)", err)
		}
		return nil
	})
	return path, raw
}
