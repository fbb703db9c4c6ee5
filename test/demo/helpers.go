package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/rewire-cni/rewire/pkg/nad"
	"github.com/rewire-cni/rewire/pkg/netstatus"
	"github.com/rewire-cni/rewire/test/harness"
)

// binaries returns the directory holding rewire and rewired: the demo's
// own when they were built next to it (make demo does), else a fresh build
// under tmp.
func binaries(tmp string) (string, error) {
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		_, err1 := os.Stat(filepath.Join(dir, "rewire"))
		_, err2 := os.Stat(filepath.Join(dir, "rewired"))
		_, err3 := os.Stat(filepath.Join(dir, "rewire-plugin"))
		if err1 == nil && err2 == nil && err3 == nil {
			return dir, nil
		}
	}
	bin := filepath.Join(tmp, "bin")
	fmt.Println("    building rewire and rewired")
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/rewired")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return bin, err
	}
	root, err := os.Getwd()
	if err != nil {
		return bin, err
	}
	return bin, harness.BuildPlugin(root, bin)
}

// createNAD creates a NetworkAttachmentDefinition in default.
func createNAD(ctx context.Context, api *harness.APIServer, name, config string) error {
	n := &unstructured.Unstructured{Object: map[string]interface{}{"apiVersion": "k8s.cni.cncf.io/v1",
		"kind": "NetworkAttachmentDefinition", "metadata": map[string]interface{}{"name": name, "namespace": "default"},
		"spec": map[string]interface{}{"config": config}}}
	_, err := api.Dynamic.Resource(nad.GVR).Namespace("default").Create(ctx, n, metav1.CreateOptions{})
	return err
}

// edit sets a pod annotation as kubectl annotate does, then waits for the
// daemon's n-th Event with reason (failing on any Event saying the edit was
// refused or failed) and for network-status to show the outcome (done),
// and prints both.
func edit(ctx context.Context, api *harness.APIServer, p *harness.Pod, what, annotation, value, reason string, n int,
	done func([]netstatus.Status) bool) (string, error) {
	body, _ := json.Marshal(map[string]interface{}{"metadata": map[string]interface{}{"annotations": map[string]string{annotation: value}}})
	start := time.Now()
	if _, err := api.Client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.MergePatchType, body, metav1.PatchOptions{}); err != nil {
		return "", err
	}
	msg, err := waitEvent(ctx, api, p, reason, n)
	if err != nil {
		return "", err
	}
	took := time.Since(start)
	st, err := waitStatus(ctx, api, p, "the "+what, done)
	if err != nil {
		return "", err
	}
	say("Event %s: %s (%s after the edit)", reason, msg, took.Round(time.Millisecond))
	say("%s:", netstatus.Annotation)
	printStatus(st)
	return msg, nil
}

// failures are the Event reasons saying an edit was refused or failed.
var failures = []string{"InterfaceAddRejected", "FailedAddingInterface", "FailedRemovingInterface", "SwitchRejected", "SwitchFailed"}

// waitEvent waits until the pod has n Events with reason and returns the
// newest one's message.
func waitEvent(ctx context.Context, api *harness.APIServer, p *harness.Pod, reason string, n int) (string, error) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		evs, err := api.Client.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + p.Name})
		if err != nil {
			return "", err
		}
		var msgs []string
		for _, ev := range evs.Items {
			for _, f := range failures {
				if ev.Reason == f {
					return "", fmt.Errorf("rewired reported %s: %s", ev.Reason, ev.Message)
				}
			}
			if ev.Reason == reason {
				msgs = append(msgs, ev.Message)
			}
		}
		if len(msgs) >= n {
			return msgs[len(msgs)-1], nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "", fmt.Errorf("no %s Event after 60s", reason)
}

// waitStatus waits until the pod's network-status satisfies done.
func waitStatus(ctx context.Context, api *harness.APIServer, p *harness.Pod, what string, done func([]netstatus.Status) bool) ([]netstatus.Status, error) {
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		pod, err := api.Client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		if last = pod.Annotations[netstatus.Annotation]; last != "" {
			var st []netstatus.Status
			if err := json.Unmarshal([]byte(last), &st); err != nil {
				return nil, fmt.Errorf("%s: %w", netstatus.Annotation, err)
			}
			if done(st) {
				return st, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("network-status never showed %s outcome; last: %s", what, last)
}

// printStatus prints network-status one interface a line.
func printStatus(st []netstatus.Status) {
	for _, s := range st {
		def := ""
		if s.Default {
			def = "default route"
		}
		fmt.Println(strings.TrimRight(fmt.Sprintf("      %-5s %-22s %-18s %s", s.Interface, s.Name, strings.Join(s.IPs, ","), def), " "))
	}
}

// flowing waits until the probe and the TCP stream get fresh replies.
func flowing(probe *harness.Prober, stream *harness.Stream) error {
	p0 := probe.Stats().Received
	s0, err := stream.Echoed()
	deadline := time.Now().Add(10 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		var s int
		if s, err = stream.Echoed(); err == nil && probe.Stats().Received > p0+50 && s > s0+50 {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("the TCP connection to the pod broke: %w", err)
	}
	return fmt.Errorf("traffic to the pod is not flowing: probe %s (the host must forward between %s and the pod networks: "+
		"net.ipv4.ip_forward, the iptables FORWARD chain)", probe.Stats(), client)
}

func showLinks(netns ns.NetNS) error {
	if _, err := exec.LookPath("ip"); err == nil {
		out, err := exec.Command("ip", "-br", "-n", filepath.Base(netns.Path()), "addr").CombinedOutput()
		var lines []string
		for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			if !strings.HasPrefix(l, "lo ") {
				lines = append(lines, strings.TrimRight(l, " "))
			}
		}
		fmt.Println(indent(strings.Join(lines, "\n")))
		return err
	}
	links, err := harness.Links(netns)
	for name, l := range links {
		fmt.Printf("      %s: %s %v\n", name, l.MAC, l.Addrs)
	}
	return err
}

func indent(s string) string {
	return "      " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n      ")
}

func keys(m map[string]harness.Link) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func makeMaster() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	deleteLinks(master, bridge, client)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: master}, PeerName: master + "p"}); err != nil {
		return fmt.Errorf("creating veth %s: %w", master, err)
	}
	for _, n := range []string{master, master + "p"} {
		l, err := netlinksafe.LinkByName(n)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
	}
	return nil
}

func deleteLinks(names ...string) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, n := range names {
		if l, err := netlinksafe.LinkByName(n); err == nil {
			_ = netlink.LinkDel(l)
		}
	}
}
