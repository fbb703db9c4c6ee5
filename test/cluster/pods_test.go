package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rewire-cni/rewire/test/harness"
)

// echoPort is where every pod answers UDP and TCP echo.
const echoPort = 7000

// pod is a sandbox on a node, added through the runtime stand-in (the
// rewire plugin, rewired, the delegates), with echo servers running.
type pod struct {
	*harness.Pod
	node *node
	IP   net.IP
	echo *harness.Echo
}

func (p *pod) String() string { return p.Namespace + "/" + p.Name }

// newPod creates the pod object bound to n, its netns, and runs the ADD.
func newPod(t testing.TB, n *node, namespace, name string, annotations map[string]string) *pod {
	t.Helper()
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: annotations, Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	created, err := c.API.Client.CoreV1().Pods(namespace).Create(context.Background(), obj, metav1.CreateOptions{})
	must(t, err)
	netns, err := testutils.NewNS()
	must(t, err)
	p := &pod{node: n, Pod: &harness.Pod{Namespace: namespace, Name: name, UID: string(created.UID),
		ContainerID: fmt.Sprintf("c%d-%s", os.Getpid(), name), NetNS: netns}}
	res, err := n.rt.Add(context.Background(), p.Pod)
	if err != nil {
		t.Fatalf("ADD of %s on %s: %v", p, n.Name, err)
	}
	r, err := current.NewResultFromResult(res)
	must(t, err)
	if len(r.IPs) == 0 {
		t.Fatalf("ADD of %s gave no address: %v", p, r)
	}
	p.IP = r.IPs[0].Address.IP
	if p.echo, err = harness.StartEcho(netns, echoPort); err != nil {
		t.Fatal(err)
	}
	return p
}

// del deletes the pod as a kubelet sees it deleted: the object marked
// Terminating, the echo servers stopped, the DEL, the object removed.
func (p *pod) del(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	_ = c.API.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{})
	p.echo.Close()
	if err := p.node.rt.Del(ctx, p.Pod); err != nil {
		t.Errorf("DEL of %s: %v", p, err)
	}
	_ = p.NetNS.Close()
	_ = testutils.UnmountNS(p.NetNS)
	now := int64(0)
	_ = c.API.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &now})
}

// link is the pod's interface name of its default route's link (eth0) and
// its host side's kind: "bridge" (A: flannel's bridge) or "veth" (B: ptp).
func (p *pod) hostKind(t testing.TB) string {
	t.Helper()
	kind := ""
	must(t, p.node.NetNS.Do(func(ns.NetNS) error {
		routes, err := netlink.RouteGet(p.IP)
		if err != nil || len(routes) == 0 {
			return fmt.Errorf("node %s has no route to %s: %v", p.node.Name, p.IP, err)
		}
		l, err := netlink.LinkByIndex(routes[0].LinkIndex)
		if err == nil {
			kind = l.Type()
		}
		return err
	}))
	return kind
}

// mesh probes every ordered pair of its pods (UDP, every interval) and
// keeps a TCP stream from each pod to a pod of another node.
type mesh struct {
	mu       sync.Mutex
	pods     []*pod
	probers  map[[2]*pod]*harness.Prober
	streams  map[[2]*pod]*harness.Stream
	interval time.Duration
}

func newMesh(interval time.Duration) *mesh {
	return &mesh{probers: map[[2]*pod]*harness.Prober{}, streams: map[[2]*pod]*harness.Stream{}, interval: interval}
}

// add starts the probes between p and every member of the mesh (both
// ways), and with stream a TCP stream from p to a member on another node;
// p becomes a member. join is add for a pod that probes the members and is
// probed by them only (a short-lived pod).
func (m *mesh) add(t testing.TB, p *pod, stream bool) { m.join(t, p, stream, true) }

func (m *mesh) join(t testing.TB, p *pod, stream, member bool) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, q := range m.pods {
		for _, pair := range [][2]*pod{{p, q}, {q, p}} {
			pr, err := harness.StartProber(pair[0].NetNS, net.JoinHostPort(pair[1].IP.String(), fmt.Sprint(echoPort)), m.interval)
			must(t, err)
			m.probers[pair] = pr
		}
	}
	if stream {
		for _, q := range m.pods {
			if q.node != p.node {
				s, err := harness.StartStream(p.NetNS, net.JoinHostPort(q.IP.String(), fmt.Sprint(echoPort)), time.Millisecond)
				must(t, err)
				m.streams[[2]*pod{p, q}] = s
				break
			}
		}
	}
	if member {
		m.pods = append(m.pods, p)
	}
}

// remove stops every probe and stream of p (before its DEL) and returns
// what they saw while p was in the mesh.
func (m *mesh) remove(p *pod) (lost []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for pair, pr := range m.probers {
		if pair[0] == p || pair[1] == p {
			if st := pr.Stop(); st.Lost() > 0 {
				lost = append(lost, fmt.Sprintf("%s -> %s: %s", pair[0], pair[1], st))
			}
			delete(m.probers, pair)
		}
	}
	for pair, s := range m.streams {
		if pair[0] == p || pair[1] == p {
			if _, err := s.Stop(); err != nil {
				lost = append(lost, fmt.Sprintf("stream %s -> %s: %v", pair[0], pair[1], err))
			}
			delete(m.streams, pair)
		}
	}
	for i, q := range m.pods {
		if q == p {
			m.pods = append(m.pods[:i], m.pods[i+1:]...)
			break
		}
	}
	return lost
}

// window sums the probes sent between from and to, per pair kind (same
// node, across nodes), and lists each pair that lost any.
func (m *mesh) window(from, to time.Time) (sent map[string]int, lost []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sent = map[string]int{}
	for pair, pr := range m.probers {
		st := pr.Window(from, to)
		kind := "cross-node"
		if pair[0].node == pair[1].node {
			kind = "same-node"
		}
		sent[kind] += st.Sent
		sent[kind+" lost"] += st.Lost()
		if st.Lost() > 0 {
			lost = append(lost, fmt.Sprintf("%s (%s) -> %s (%s): %s, first lost at %s", pair[0], pair[0].node.Name, pair[1], pair[1].node.Name,
				st, st.LostAt[0].Format("15:04:05.000")))
		}
	}
	return sent, lost
}

// streamErrors lists the streams that broke.
func (m *mesh) streamErrors() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for pair, s := range m.streams {
		if n, err := s.Echoed(); err != nil {
			out = append(out, fmt.Sprintf("%s -> %s after %d messages: %v", pair[0], pair[1], n, err))
		}
	}
	return out
}

// waitFlowing waits until every pair of the mesh got a reply after since.
func (m *mesh) waitFlowing(t testing.TB, timeout time.Duration) {
	t.Helper()
	since := time.Now()
	deadline := since.Add(timeout)
	for {
		m.mu.Lock()
		var silent []string
		for pair, pr := range m.probers {
			if st := pr.Window(since, time.Now()); st.Received == 0 {
				silent = append(silent, fmt.Sprintf("%s (%s) -> %s (%s)", pair[0], pair[0].node.Name, pair[1], pair[1].node.Name))
			}
		}
		m.mu.Unlock()
		if len(silent) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replies on %d pairs: %s", len(silent), strings.Join(silent, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
