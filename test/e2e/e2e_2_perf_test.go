package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func clientset(t testing.TB) *kubernetes.Clientset {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = 200, 400
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func busyboxPod(name, networks string) *corev1.Pod {
	grace := int64(1)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"e2e-perf": "true"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "main", Image: "busybox:e2e", ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"},
			}},
		},
	}
	if networks != "" {
		p.Annotations = map[string]string{networksAnn: networks}
	}
	return p
}

// runningWatcher reports when each e2e-perf pod is first seen Running.
type runningWatcher struct {
	mu      sync.Mutex
	running map[string]time.Time
	stop    func()
}

func watchRunning(t testing.TB, cs *kubernetes.Clientset) *runningWatcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rw := &runningWatcher{running: map[string]time.Time{}, stop: cancel}
	seen := func(p *corev1.Pod) {
		if p.Status.Phase != corev1.PodRunning {
			return
		}
		rw.mu.Lock()
		if _, ok := rw.running[p.Name]; !ok {
			rw.running[p.Name] = time.Now()
		}
		rw.mu.Unlock()
	}
	opts := metav1.ListOptions{LabelSelector: "e2e-perf=true"}
	w, err := cs.CoreV1().Pods("default").Watch(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for ctx.Err() == nil {
			for ev := range w.ResultChan() {
				if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted {
					seen(p)
				}
			}
			// The watch ended (server timeout, overload): catch up with a
			// list, then watch again.
			if ctx.Err() != nil {
				return
			}
			if l, err := cs.CoreV1().Pods("default").List(ctx, opts); err == nil {
				for i := range l.Items {
					seen(&l.Items[i])
				}
			}
			for {
				if w, err = cs.CoreV1().Pods("default").Watch(ctx, opts); err == nil || ctx.Err() != nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if ctx.Err() != nil {
				return
			}
		}
	}()
	return rw
}

func (rw *runningWatcher) wait(t testing.TB, name string, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rw.mu.Lock()
		at, ok := rw.running[name]
		rw.mu.Unlock()
		if ok {
			return at
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s not Running after %s: %s", name, timeout, podEvents("default", name))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func deletePerfPods(t testing.TB, cs *kubernetes.Clientset) {
	t.Helper()
	ctx := context.Background()
	if err := cs.CoreV1().Pods("default").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "e2e-perf=true"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 180*time.Second, "perf pods gone", func() error {
		l, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "e2e-perf=true"})
		if err != nil {
			return err
		}
		if len(l.Items) > 0 {
			return fmt.Errorf("%d pods left", len(l.Items))
		}
		return nil
	})
}

// Pod start-up latency (create -> Running, seen by a watch), one pod at a
// time, without and with two secondary networks.
func TestStartupLatency(t *testing.T) {
	const n = 20
	macvlanMaster(t)
	mustKubectl(t, macvlanNAD("default", "lat-a", "192.168.51", 10, 250), "apply", "-f", "-")
	mustKubectl(t, macvlanNAD("default", "lat-b", "192.168.52", 10, 250), "apply", "-f", "-")
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "lat-a", "lat-b", "--ignore-not-found") })
	cs := clientset(t)
	rw := watchRunning(t, cs)
	defer rw.stop()
	ctx := context.Background()
	results := map[string]time.Duration{}
	for _, mode := range []struct{ name, networks string }{{"primary only", ""}, {"two secondary networks", "lat-a,lat-b"}} {
		var lat []time.Duration
		for i := range n {
			name := fmt.Sprintf("lat-%d-%d", len(mode.networks), i)
			start := time.Now()
			if _, err := cs.CoreV1().Pods("default").Create(ctx, busyboxPod(name, mode.networks), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			lat = append(lat, rw.wait(t, name, 60*time.Second).Sub(start))
		}
		results[mode.name] = median(lat)
		t.Logf("pod start-up (create -> Running), %s: median %v, min %v, max %v over %d pods",
			mode.name, median(lat).Round(time.Millisecond), minD(lat).Round(time.Millisecond), maxD(lat).Round(time.Millisecond), n)
	}
	if mode := "two secondary networks"; results[mode] > 10*time.Second {
		t.Errorf("median start-up with two secondary networks %v", results[mode])
	}
	deletePerfPods(t, cs)
	assertReleased(t, "lat-a", "lat-b", "e2e-bridge")
}

func minD(d []time.Duration) time.Duration {
	m := d[0]
	for _, x := range d {
		m = min(m, x)
	}
	return m
}

func maxD(d []time.Duration) time.Duration {
	m := d[0]
	for _, x := range d {
		m = max(m, x)
	}
	return m
}

// rewiredPID finds the rewired process of the DaemonSet on this host.
func rewiredPID(t testing.TB) int {
	t.Helper()
	pid := findRewired()
	if pid == 0 {
		t.Fatal("no rewired process (/rewired --config ...) on this host")
	}
	return pid
}

func isRewired(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.HasPrefix(string(raw), "/rewired\x00--config\x00")
}

// findRewired returns the serving rewired: the daemon that its container's
// first process (rewired too, supervising it: package pidone) runs, or
// that first process when it runs the daemon itself (REWIRE_NO_INIT).
func findRewired() int {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var found []int
	for _, d := range procs {
		if pid, err := strconv.Atoi(filepath.Base(d)); err == nil && isRewired(pid) {
			found = append(found, pid)
		}
	}
	for _, pid := range found {
		if isRewired(parent(pid)) {
			return pid
		}
	}
	if len(found) > 0 {
		return found[0]
	}
	return 0
}

// parent is the parent PID of pid (0 when unknown).
func parent(pid int) int {
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	var state string
	var ppid int
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 {
		_, _ = fmt.Sscan(string(stat[i+1:]), &state, &ppid)
	}
	return ppid
}

// memory is rewired's resident set, its container's cgroup usage (page cache
// included) and the cgroup's anonymous memory (rewired and the delegate
// plugins it runs), in bytes.
func memory(pid int) (rss, cgroup, cgroupRSS int64) {
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			rss = kb * 1024
		}
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, l := range strings.Split(string(cg), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && strings.Contains(","+f[1]+",", ",memory,") {
			raw, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", f[2], "memory.usage_in_bytes"))
			cgroup, _ = strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
			stat, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", f[2], "memory.stat"))
			for _, sl := range strings.Split(string(stat), "\n") {
				if sf := strings.Fields(sl); len(sf) == 2 && sf[0] == "total_rss" {
					cgroupRSS, _ = strconv.ParseInt(sf[1], 10, 64)
				}
			}
		}
	}
	return rss, cgroup, cgroupRSS
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func rewiredRestarts(t testing.TB) string {
	t.Helper()
	return strings.TrimSpace(mustKubectl(t, "", "-n", "kube-system", "get", "pods", "-l", "app=rewire",
		"-o", "jsonpath={.items[*].status.containerStatuses[*].restartCount}"))
}

// rewired's memory at rest and during a burst of 50 pods (REWIRE_E2E_BURST)
// with a secondary network each (created 10 at a time, then deleted at once).
func TestDaemonSetMemory(t *testing.T) {
	n := 50
	if v, err := strconv.Atoi(os.Getenv("REWIRE_E2E_BURST")); err == nil && v > 0 && v <= 180 {
		n = v
	}
	macvlanMaster(t)
	mustKubectl(t, macvlanNAD("default", "burst-net", "192.168.61", 10, 250), "apply", "-f", "-")
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "burst-net", "--ignore-not-found") })
	cs := clientset(t)
	pid := rewiredPID(t)
	restarts := rewiredRestarts(t)
	time.Sleep(2 * time.Second)
	rss, cg, cgRSS := memory(pid)
	t.Logf("rewired at rest: RSS %s; container cgroup %s (anonymous %s)", mib(rss), mib(cg), mib(cgRSS))

	var peakRSS, peakCG, peakCGRSS int64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if !isRewired(pid) { // restarted: follow the new process
				pid = findRewired()
			}
			if pid != 0 {
				r, c, cr := memory(pid)
				peakRSS, peakCG, peakCGRSS = max(peakRSS, r), max(peakCG, c), max(peakCGRSS, cr)
			}
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	rw := watchRunning(t, cs)
	defer rw.stop()
	start := time.Now()
	sem := make(chan struct{}, 10)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := cs.CoreV1().Pods("default").Create(context.Background(), busyboxPod(fmt.Sprintf("burst-%d", i), "burst-net"), metav1.CreateOptions{}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i := range n {
		rw.wait(t, fmt.Sprintf("burst-%d", i), 300*time.Second)
	}
	t.Logf("%d pods with a secondary network Running %.1f s after the first create", n, time.Since(start).Seconds())
	deletePerfPods(t, cs)
	close(done)
	<-sampled
	t.Logf("rewired during the %d-pod burst (create and delete): peak RSS %s; peak container cgroup %s (anonymous %s)", n, mib(peakRSS), mib(peakCG), mib(peakCGRSS))
	if got := rewiredRestarts(t); got != restarts {
		t.Errorf("rewired restarted during the burst: restartCount %s -> %s", restarts, got)
	}
	assertReleased(t, "burst-net", "e2e-bridge")
}

// Last: `kubectl delete -k deploy/` while a pod with a secondary network
// runs. Rewire's config stays first in the conf dir, so the runtime's DEL for
// that pod goes to the rewire plugin, which cannot reach rewired: the pod
// stays Terminating with a clear "try again later" error until Rewire is
// installed again, and then goes away with nothing leaked. (Pods being
// deletable while Rewire is uninstalled is an open item of the real-node
// issue: the test passes either way but says which happened.)
func TestUninstallAndReinstall(t *testing.T) {
	macvlanMaster(t)
	mustKubectl(t, macvlanNAD("default", "macvlan-conf", "192.168.1", 200, 216), "apply", "-f", "-")
	t.Cleanup(func() { kubectl("", "delete", "net-attach-def", "macvlan-conf", "--ignore-not-found") })
	createPod(t, "default", "survivor", map[string]string{networksAnn: "macvlan-conf"})
	waitRunning(t, "default", "survivor", 60*time.Second)
	mustKubectl(t, "", "delete", "-k", repoRoot+"/deploy", "--wait=true", "--timeout=120s")
	eventually(t, 60*time.Second, "rewired pods gone", func() error {
		out, err := kubectl("", "-n", "kube-system", "get", "pods", "-l", "app=rewire", "-o", "name")
		if err != nil || strings.TrimSpace(out) != "" {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
	// No daemon: the plugin runs rewired's copy in the bin dir for the DEL,
	// which works from the store; the pod goes and nothing leaks.
	start := time.Now()
	if out, err := kubectl("", "delete", "pod", "survivor", "--wait=true", "--timeout=60s"); err != nil {
		t.Fatalf("pod not deletable after uninstall: %v %s; events: %s", err, out, podEvents("default", "survivor"))
	}
	t.Logf("pod deleted %.1f s after uninstall (rewired gone)", time.Since(start).Seconds())
	assertReleased(t, "macvlan-conf", "e2e-bridge")
	// Reinstall for the scenarios after this one.
	mustKubectl(t, "", "apply", "-k", repoRoot+"/deploy")
	mustKubectl(t, "", "-n", "kube-system", "rollout", "status", "daemonset/rewire", "--timeout=120s")
}
