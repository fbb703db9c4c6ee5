package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rewire-cni/rewire/pkg/daemon"
	"github.com/rewire-cni/rewire/pkg/migration"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// migrationStatus reads the NetworkMigration's status.
func migrationStatus(t testing.TB, name string) migration.Status {
	t.Helper()
	u, err := api.Dynamic.Resource(migration.GVR).Get(context.Background(), name, metav1.GetOptions{})
	must(t, err)
	m, err := migration.FromUnstructured(u)
	must(t, err)
	return m.Status
}

// waitMigration polls the status until cond holds.
func waitMigration(t testing.TB, name, what string, cond func(migration.Status) bool) migration.Status {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	var st migration.Status
	for time.Now().Before(deadline) {
		if st = migrationStatus(t, name); cond(st) {
			return st
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("migration %s never got %s; status %+v", name, what, st)
	return st
}

// cli runs kubectl rewire and checks that it succeeds saying want.
func cli(t testing.TB, want string, args ...string) {
	t.Helper()
	out, err := kubectlRewire(t, args...)
	if err != nil || !strings.Contains(out, want) {
		t.Fatalf("kubectl rewire %v: %v\n%s", args, err, out)
	}
}

// migPod is a pod of the migration test with its IP and its probe.
type migPod struct {
	e     *env
	p     *harness.Pod
	ip    string
	web   bool
	probe *harness.Prober
}

// TestMigration moves 27 of 30 pods on 3 simulated nodes (a rewired each)
// from the cluster network (bridge) to ptp with a canary selector, pauses
// in the middle, sees one injected failure, then rolls back; every pod keeps
// its IP and answers a 100 Hz probe throughout, losing none.
func TestMigration(t *testing.T) {
	var nodes []*env
	for i := range 3 {
		e := newEnv(t, envOpts{noStart: true})
		if i == 2 {
			e.daemon.ExtraArgs = []string{"--test-faults", "add:after:rwsw0=fail"} // the first switch on this node fails
		}
		must(t, e.daemon.Start())
		nodes = append(nodes, e)
	}
	ptpConf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"mig-ptp-%d","plugins":[{"type":"ptp","ipMasq":false,"capabilities":{"ips":true},
	  "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.250.0.0/16"}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`, nodes[0].n, nodes[0].ipamDir)
	nodes[0].createNAD("default", "mig-ptp", ptpConf, nil)
	client := farClient(t, nodes[0])
	t.Cleanup(client.Close)

	ctx := context.Background()
	var pods []*migPod
	for _, e := range nodes {
		for i := range 10 {
			p := e.newPod("default", fmt.Sprintf("mig-%d-%d", e.n, i), nil)
			mp := &migPod{e: e, p: p, web: i != 9}
			label := "web"
			if !mp.web {
				label = "other"
			}
			body, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"labels": map[string]string{"app": label}}})
			_, err := api.Client.CoreV1().Pods("default").Patch(ctx, p.Name, types.MergePatchType, body, metav1.PatchOptions{})
			must(t, err)
			r, err := e.rt.Add(ctx, p)
			must(t, err)
			mp.ip = primaryIP(t, r)
			startEcho(t, p)
			mp.probe, err = harness.StartProber(client.NS, mp.ip+":7777", 10*time.Millisecond)
			must(t, err)
			pods = append(pods, mp)
		}
	}
	for _, mp := range pods { // the daemons' pod caches have the labels the migration selects on
		want := map[bool]string{true: "web", false: "other"}[mp.web]
		mp.e.waitView(t, mp.p, "label app="+want, func(v daemon.PodView) bool { return v.Labels["app"] == want })
	}

	cpu0 := make([]time.Duration, len(nodes))
	for i, e := range nodes {
		cpu0[i] = e.daemon.CPU()
	}
	start := time.Now()
	cli(t, `networkmigration to-ptp created: cluster -> default/mig-ptp`,
		"migrate", "create", "to-ptp", "--from", "cluster", "--to", "default/mig-ptp", "-l", "app=web", "--max-per-node", "2")
	t.Cleanup(func() {
		_ = api.Dynamic.Resource(migration.GVR).Delete(context.Background(), "to-ptp", metav1.DeleteOptions{})
	})
	// A migration off the network this one moves pods onto is refused.
	if out, err := kubectlRewire(t, "migrate", "create", "back", "--from", "default/mig-ptp", "--to", "cluster"); err == nil ||
		!strings.Contains(out, "NetworkMigration to-ptp moves pods to default/mig-ptp") {
		t.Fatalf("kubectl rewire migrate create back (off to-ptp's target): %v\n%s", err, out)
	}

	// Pause in the middle: every node reports that it saw the pause and
	// that its switches in flight are done; then no switch starts.
	waitMigration(t, "to-ptp", "6 pods switched", func(s migration.Status) bool { return s.Switched >= 6 })
	cli(t, "networkmigration to-ptp paused", "migrate", "pause", "to-ptp")
	pausedAt := time.Now()
	paused := waitMigration(t, "to-ptp", "every node paused, no switch running", func(s migration.Status) bool {
		return s.Phase == "Paused" && len(s.Nodes) == 3 && quiet(s)
	})
	settled := time.Since(pausedAt)
	// An observation window, not synchronisation: 8 of the nodes' 250 ms
	// migration steps, polled, in which nothing may move.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if now := migrationStatus(t, "to-ptp"); now.Switched != paused.Switched || now.Phase != "Paused" || !quiet(now) {
			t.Fatalf("switches went on while paused: %+v then %+v", paused, now)
		}
	}
	t.Logf("paused at %+v (every node paused, its switches done, %s after the pause)", paused.Counts, settled.Round(time.Millisecond))
	cli(t, "networkmigration to-ptp resumed", "migrate", "resume", "to-ptp")
	watched := make(chan string, 1)
	go func() {
		out, _ := kubectlRewire(t, "migrate", "status", "to-ptp", "-w", "--timeout", "3m")
		watched <- out
	}()

	st := waitMigration(t, "to-ptp", "completion", func(s migration.Status) bool { return s.Phase == "Incomplete" && len(s.Nodes) == 3 })
	took := time.Since(start)
	if st.Total != 27 || st.Switched != 26 || st.Failed != 1 || st.Skipped != 0 || st.Remaining != 0 {
		t.Fatalf("migration counts %+v, want 27 total, 26 switched, 1 failed", st.Counts)
	}
	out := <-watched
	if !regexp.MustCompile(`(?s)\[#+\] 27/27 done: 26 switched, 1 failed, 0 skipped, 0 remaining \(Incomplete\).*NODE\s+TOTAL.*failed  default/mig-`).MatchString(out) {
		t.Fatalf("migrate status -w:\n%s", out)
	}
	failedPods := st.Nodes[nodes[2].node].FailedPods
	if len(failedPods) != 1 || !strings.Contains(failedPods[0].Reason, "injected fault") {
		t.Fatalf("failed pods on %s: %+v", nodes[2].node, failedPods)
	}
	t.Logf("migration of 27 pods on 3 nodes (2 at a time per node, with a pause of %s + 2 s): %s; failed: %+v",
		settled.Round(time.Millisecond), took.Round(time.Millisecond), failedPods)
	for i, e := range nodes {
		t.Logf("  %s: rewired CPU %.2f s during the migration, RSS %.1f MiB now, peak %.1f MiB", e.node,
			(e.daemon.CPU() - cpu0[i]).Seconds(), float64(e.daemon.RSS())/(1<<20), float64(e.daemon.PeakRSS())/(1<<20))
	}
	failedPod := strings.TrimPrefix(failedPods[0].Pod, "default/")
	for _, mp := range pods {
		want := fmt.Sprintf("cluster-%d", mp.e.n)
		if mp.web && mp.p.Name != failedPod {
			want = "default/mig-ptp"
		}
		assertOn(t, mp, want)
	}

	// Roll back: the 26 switched pods return to the cluster network.
	cli(t, "networkmigration to-ptp rolling back", "migrate", "rollback", "to-ptp")
	st = waitMigration(t, "to-ptp", "rollback", func(s migration.Status) bool { return s.Phase == "RolledBack" && len(s.Nodes) == 3 })
	if st.Total != 26 || st.Switched != 26 || st.Failed != 0 {
		t.Fatalf("rollback counts %+v, want 26 switched back", st.Counts)
	}
	for _, mp := range pods {
		assertOn(t, mp, fmt.Sprintf("cluster-%d", mp.e.n))
		pod, err := api.Client.CoreV1().Pods("default").Get(ctx, mp.p.Name, metav1.GetOptions{})
		must(t, err)
		if v, ok := pod.Annotations[migration.Annotation]; ok || pod.Annotations[selection.DefaultNetworkAnnotation] != "" {
			t.Fatalf("pod %s keeps migration annotations after rollback: %q %q", mp.p.Name, v, pod.Annotations[selection.DefaultNetworkAnnotation])
		}
	}

	var sent int
	for _, mp := range pods {
		st := mp.probe.Stop()
		sent += st.Sent
		if st.Lost() > 0 {
			t.Errorf("pod %s lost %d of %d probes over the migration and the rollback (longest gap %v)", mp.p.Name, st.Lost(), st.Sent, st.MaxGap)
		}
	}
	t.Logf("100 Hz probes to %d pods over the migration and the rollback: %d sent", len(pods), sent)
	for _, mp := range pods {
		must(t, mp.e.rt.Del(ctx, mp.p))
	}
	client.Close()
	for _, e := range nodes {
		var others []string // the other simulated nodes' links
		for _, o := range nodes {
			others = append(others, o.bridge, o.master, o.master+"p")
		}
		e.assertNoLeaks(others...)
	}
}

// quiet reports whether every node of the status has seen the pause and
// runs no switch.
func quiet(s migration.Status) bool {
	for _, n := range s.Nodes {
		if !n.Paused || n.Switching > 0 {
			return false
		}
	}
	return true
}

// assertOn waits until the pod's network-status shows network as primary
// with its original IP.
func assertOn(t testing.TB, mp *migPod, network string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := networkStatus(t, mp.p)
		if len(st) == 1 && st[0].Name == network && st[0].Default && len(st[0].IPs) == 1 && st[0].IPs[0] == mp.ip {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s: network-status %+v, want %s with %s", mp.p.Name, st, network, mp.ip)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newPods: to — a selected pod created on a node during a migration starts
// on the target network, joins the migration (annotations written by the
// node's controller) and is moved back by a rollback.
func TestMigrationNewPods(t *testing.T) {
	e := newEnv(t, envOpts{})
	cluster, b := fmt.Sprintf("cluster-%d", e.n), fmt.Sprintf("np-%d", e.n)
	e.createNAD("default", "np-ptp", e.ptpConf(b), nil)
	ctx := context.Background()
	old := &migPod{e: e, p: e.newPod("default", "np-old", nil)}
	r, err := e.rt.Add(ctx, old.p)
	must(t, err)
	old.ip = primaryIP(t, r)
	cli(t, "created", "migrate", "create", "np", "--from", "cluster", "--to", "default/np-ptp", "--new-pods", "to",
		"--namespace-selector", "kubernetes.io/metadata.name=default")
	t.Cleanup(func() {
		_ = api.Dynamic.Resource(migration.GVR).Delete(context.Background(), "np", metav1.DeleteOptions{})
	})
	waitMigration(t, "np", "completion", func(s migration.Status) bool { return s.Phase == "Complete" && s.Switched == 1 })
	assertOn(t, old, "default/np-ptp")

	fresh := &migPod{e: e, p: e.newPod("default", "np-new", nil)}
	e.waitView(t, fresh.p, "the new pod", func(v daemon.PodView) bool { return string(v.UID) == fresh.p.UID })
	r, err = e.rt.Add(ctx, fresh.p)
	must(t, err)
	fresh.ip = primaryIP(t, r)
	assertOn(t, fresh, "default/np-ptp")
	waitMigration(t, "np", "the new pod counted", func(s migration.Status) bool { return s.Total == 2 && s.Switched == 2 })
	pod, err := api.Client.CoreV1().Pods("default").Get(ctx, "np-new", metav1.GetOptions{})
	must(t, err)
	if pod.Annotations[selection.DefaultNetworkAnnotation] != "default/np-ptp" || pod.Annotations[migration.Annotation] != "np" {
		t.Fatalf("the new pod's annotations: %v", pod.Annotations)
	}

	cli(t, "rolling back", "migrate", "rollback", "np")
	st := waitMigration(t, "np", "rollback", func(s migration.Status) bool { return s.Phase == "RolledBack" })
	if st.Total != 2 || st.Switched != 2 {
		t.Fatalf("rollback %+v", st.Counts)
	}
	assertOn(t, old, cluster)
	assertOn(t, fresh, cluster)
	for _, mp := range []*migPod{old, fresh} {
		must(t, e.rt.Del(ctx, mp.p))
	}
	e.assertNoLeaks()
}

// A NetworkMigration is cluster-wide: its `to` without namespace is the NAD
// of multusNamespace for every pod, never one of the pod's own namespace. A
// tenant namespace holding a NAD of the same name gets its pods neither
// onto it while the intended NAD is missing (the node waits, saying why)
// nor afterwards; pods of namespaces without such a NAD go to the same
// network, and their annotations name it with its namespace.
func TestMigrationUnqualifiedTo(t *testing.T) {
	e := newEnv(t, envOpts{extraConfig: "multusNamespace: rw-system\nnamespaceIsolation: true\nglobalNamespaces: [rw-system]\n"})
	cluster := fmt.Sprintf("cluster-%d", e.n)
	e.createNAD("other", "uq-ptp", e.ptpConf(fmt.Sprintf("uq-tenant-%d", e.n)), nil) // the tenant's own, same name
	ctx := context.Background()
	var pods []*migPod
	for _, ns := range []string{"other", "default"} {
		mp := &migPod{e: e, p: e.newPod(ns, "uq-"+ns, nil)}
		r, err := e.rt.Add(ctx, mp.p)
		must(t, err)
		mp.ip = primaryIP(t, r)
		assertOn(t, mp, cluster)
		pods = append(pods, mp)
	}
	cli(t, "networkmigration uq created: cluster -> uq-ptp", "migrate", "create", "uq", "--from", "cluster", "--to", "uq-ptp",
		"--namespaces", "other,default")
	t.Cleanup(func() {
		_ = api.Dynamic.Resource(migration.GVR).Delete(context.Background(), "uq", metav1.DeleteOptions{})
	})

	// rw-system/uq-ptp does not exist yet: nothing starts, the node says why.
	st := waitMigration(t, "uq", "the node waiting for rw-system/uq-ptp", func(s migration.Status) bool {
		return strings.Contains(s.Nodes[e.node].Waiting, "rw-system/uq-ptp")
	})
	if n := st.Nodes[e.node]; n.Total != 2 || n.Remaining != 2 || n.To != "rw-system/uq-ptp" ||
		!strings.Contains(n.Waiting, "multusNamespace rw-system") {
		t.Fatalf("node report %+v, want 2 pods remaining, to rw-system/uq-ptp, waiting for it", n)
	}
	for _, mp := range pods {
		assertOn(t, mp, cluster)
		pod, err := api.Client.CoreV1().Pods(mp.p.Namespace).Get(ctx, mp.p.Name, metav1.GetOptions{})
		must(t, err)
		if v, ok := pod.Annotations[selection.DefaultNetworkAnnotation]; ok {
			t.Fatalf("pod %s/%s got default-network %q while the target is missing", mp.p.Namespace, mp.p.Name, v)
		}
	}
	t.Logf("waiting: %s", st.Nodes[e.node].Waiting)

	// The intended network appears in multusNamespace: both pods go there.
	e.createNAD("rw-system", "uq-ptp", e.ptpConf(fmt.Sprintf("uq-%d", e.n)), nil)
	st = waitMigration(t, "uq", "completion", func(s migration.Status) bool { return s.Phase == "Complete" })
	if st.Total != 2 || st.Switched != 2 || st.Nodes[e.node].Waiting != "" {
		t.Fatalf("migration %+v (node %+v), want both pods switched", st.Counts, st.Nodes[e.node])
	}
	for _, mp := range pods {
		assertOn(t, mp, "rw-system/uq-ptp")
		pod, err := api.Client.CoreV1().Pods(mp.p.Namespace).Get(ctx, mp.p.Name, metav1.GetOptions{})
		must(t, err)
		if v := pod.Annotations[selection.DefaultNetworkAnnotation]; v != "rw-system/uq-ptp" {
			t.Fatalf("pod %s/%s: default-network %q, want rw-system/uq-ptp", mp.p.Namespace, mp.p.Name, v)
		}
	}

	cli(t, "rolling back", "migrate", "rollback", "uq")
	waitMigration(t, "uq", "rollback", func(s migration.Status) bool { return s.Phase == "RolledBack" && s.Switched == 2 })
	for _, mp := range pods {
		assertOn(t, mp, cluster)
		must(t, e.rt.Del(ctx, mp.p))
	}
	e.assertNoLeaks()
}
