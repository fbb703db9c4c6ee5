package selection

import "testing"

// FuzzParseNetworks: any annotation parses or fails cleanly, and whatever
// parses is valid (it names a network and has a namespace).
func FuzzParseNetworks(f *testing.F) {
	for _, s := range []string{"", "a", "ns/a@if0", "a,b, c/d", `[{"name":"a","ips":["10.0.0.1/24"],"mac":"02:00:00:00:00:01"}]`,
		`[{"name":"a","cni-args":{"x":[1,{"y":null}]},"portMappings":[{"hostPort":1,"containerPort":2}]}]`, `[{`, "a@b@c", "/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		elems, err := ParseNetworks(s, "pod-ns")
		if err != nil {
			return
		}
		for _, e := range elems {
			if e.Name == "" || e.Namespace == "" || e.Validate() != nil {
				t.Fatalf("accepted an invalid element %+v from %q", e, s)
			}
		}
	})
}
