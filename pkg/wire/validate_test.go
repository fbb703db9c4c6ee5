package wire

import (
	"strings"
	"testing"
)

func TestRequestValidate(t *testing.T) {
	good := Request{ContainerID: "c0ffee_1.2-3", IfName: "eth0", NetNS: "/var/run/netns/cni-1234"}
	cases := []struct {
		name    string
		mod     func(*Request)
		wantErr string // "" = valid
	}{
		{"good", func(*Request) {}, ""},
		{"proc netns", func(r *Request) { r.NetNS = "/proc/42/ns/net" }, ""},
		{"absent fields", func(r *Request) { *r = Request{} }, ""},
		{"max container ID", func(r *Request) { r.ContainerID = strings.Repeat("a", 255) }, ""},
		{"container ID ../../etc", func(r *Request) { r.ContainerID = "../../etc" }, `CNI_CONTAINERID: invalid container ID "../../etc"`},
		{"container ID with slash", func(r *Request) { r.ContainerID = "a/../../etc" }, "CNI_CONTAINERID"},
		{"container ID dot", func(r *Request) { r.ContainerID = "." }, "CNI_CONTAINERID"},
		{"container ID glob", func(r *Request) { r.ContainerID = "*" }, "CNI_CONTAINERID"},
		{"container ID inner glob", func(r *Request) { r.ContainerID = "a*b" }, "CNI_CONTAINERID"},
		{"container ID leading dash", func(r *Request) { r.ContainerID = "-a" }, "CNI_CONTAINERID"},
		{"container ID NUL", func(r *Request) { r.ContainerID = "a\x00b" }, "CNI_CONTAINERID"},
		{"container ID too long", func(r *Request) { r.ContainerID = strings.Repeat("a", 256) }, "CNI_CONTAINERID"},
		{"ifname ../../etc", func(r *Request) { r.IfName = "../../etc" }, `CNI_IFNAME: invalid interface name "../../etc"`},
		{"ifname dotdot", func(r *Request) { r.IfName = ".." }, "CNI_IFNAME"},
		{"ifname colon", func(r *Request) { r.IfName = "eth0:1" }, "CNI_IFNAME"},
		{"ifname space", func(r *Request) { r.IfName = "eth 0" }, "CNI_IFNAME"},
		{"ifname too long", func(r *Request) { r.IfName = "abcdefghijklmnop" }, "CNI_IFNAME"},
		{"netns relative", func(r *Request) { r.NetNS = "../../etc" }, `CNI_NETNS: invalid network namespace path "../../etc": it must be an absolute path`},
		{"netns dotdot", func(r *Request) { r.NetNS = "/var/run/netns/../../../etc/passwd" }, `must not contain ".." elements`},
		{"netns NUL", func(r *Request) { r.NetNS = "/run/netns/a\x00" }, "CNI_NETNS"},
		{"netns too long", func(r *Request) { r.NetNS = "/" + strings.Repeat("a", 4095) }, "too long"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := good
			c.mod(&r)
			err := r.Validate()
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("valid request refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error = %v, want %q", err, c.wantErr)
			}
		})
	}
}
