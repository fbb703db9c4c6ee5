package kube

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	metadatafake "k8s.io/client-go/metadata/fake"
)

func podMeta(name string, uid types.UID, annotations map[string]string) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: name, UID: uid, Annotations: annotations},
	}
}

// A static pod is known to the runtime by its own UID and to the API by its
// mirror pod, whose kubernetes.io/config.mirror annotation holds that UID:
// Get finds it, from the cache and from the API. Any other UID mismatch is
// not the pod.
func TestGetMirrorPod(t *testing.T) {
	mirror := podMeta("etcd-node1", "mirror-uid", map[string]string{MirrorAnnotation: "static-uid"})
	plain := podMeta("web", "api-uid", nil)
	cases := []struct {
		name, pod string
		uid       types.UID
		want      types.UID // "": not found
	}{
		{"mirror pod by the static pod's UID", "etcd-node1", "static-uid", "mirror-uid"},
		{"mirror pod by its own UID", "etcd-node1", "mirror-uid", "mirror-uid"},
		{"mirror pod, any UID", "etcd-node1", "", "mirror-uid"},
		{"mirror pod of another static pod", "etcd-node1", "other-uid", ""},
		{"pod by its UID", "web", "api-uid", "api-uid"},
		{"pod by another UID", "web", "static-uid", ""},
	}
	for _, from := range []string{"cache", "API"} {
		for _, c := range cases {
			t.Run(from+"/"+c.name, func(t *testing.T) {
				scheme := metadatafake.NewTestScheme()
				scheme.AddKnownTypeWithName(schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, &metav1.PartialObjectMetadata{})
				p := NewPods(metadatafake.NewSimpleMetadataClient(scheme, mirror.DeepCopy(), plain.DeepCopy()), "node1", 0)
				if from == "cache" {
					for _, m := range []*metav1.PartialObjectMetadata{mirror, plain} {
						if err := p.informer.GetIndexer().Add(m); err != nil {
							t.Fatal(err)
						}
					}
					if got := p.cached("kube-system", c.pod, c.uid); (got == nil) != (c.want == "") || got != nil && got.UID != c.want {
						t.Errorf("cached = %+v, want UID %q", got, c.want)
					}
				}
				got, err := p.Get(context.Background(), "kube-system", c.pod, c.uid)
				if c.want == "" {
					if err == nil || !strings.Contains(err.Error(), "the runtime asked for "+string(c.uid)) {
						t.Errorf("Get = %+v, %v; want a UID mismatch", got, err)
					}
					return
				}
				if err != nil || got.UID != c.want {
					t.Errorf("Get = %+v, %v; want UID %q", got, err, c.want)
				}
			})
		}
	}
}
