package chart

import (
	"testing"
)

// The chart mounts the directory of config.criSocket (self-GC's runtime
// socket: containerd's by default) read-only, and nothing when criSocket
// turns self-GC off.
func TestCRISocketMount(t *testing.T) {
	cases := []struct {
		name, set  string
		mount, vol string // the cri volumeMount and volume, "null" when none
	}{
		{"default: containerd", "",
			`{"mountPath":"/run/containerd","mountPropagation":"HostToContainer","name":"cri","readOnly":true}`,
			`{"hostPath":{"path":"/run/containerd","type":"DirectoryOrCreate"},"name":"cri"}`},
		{"CRI-O", "config.criSocket=unix:///var/run/crio/crio.sock",
			`{"mountPath":"/var/run/crio","mountPropagation":"HostToContainer","name":"cri","readOnly":true}`,
			`{"hostPath":{"path":"/var/run/crio","type":"DirectoryOrCreate"},"name":"cri"}`},
		{"a path", "config.criSocket=/run/k3s/containerd/containerd.sock",
			`{"mountPath":"/run/k3s/containerd","mountPropagation":"HostToContainer","name":"cri","readOnly":true}`,
			`{"hostPath":{"path":"/run/k3s/containerd","type":"DirectoryOrCreate"},"name":"cri"}`},
		{"off", "config.criSocket=off", "null", "null"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var args []string
			if c.set != "" {
				args = []string{"--set", c.set}
			}
			pod := get(t, daemonSet(t, render(t, args...), "kube-system", "rewire"), "spec", "template", "spec")
			if m := js(named(get(t, pod, "containers", 0, "volumeMounts"), "cri")); m != c.mount {
				t.Errorf("cri volumeMount %s, want %s", m, c.mount)
			}
			if v := js(named(get(t, pod, "volumes"), "cri")); v != c.vol {
				t.Errorf("cri volume %s, want %s", v, c.vol)
			}
		})
	}
}

// named is the item of a list of objects with the given name (nil: none).
func named(list any, name string) any {
	items, _ := list.([]any)
	for _, it := range items {
		if m, ok := it.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	return nil
}
