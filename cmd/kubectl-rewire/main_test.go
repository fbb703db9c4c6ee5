package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rewire-cni/rewire/pkg/version"
)

// help and version need no cluster.
func TestHelpAndVersion(t *testing.T) {
	defer func(v string) { version.Version = v }(version.Version)
	version.Version = "v1.2.3-test"
	for _, c := range []struct {
		args    []string
		want    string
		wantErr string
	}{
		{[]string{"version"}, "kubectl-rewire v1.2.3-test\n", ""},
		{[]string{"version", "x"}, "", "version takes no arguments"},
		{[]string{"--help"}, usage, ""},
		{nil, usage, ""},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			err := run(c.args, &out)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || out.String() != c.want {
				t.Fatalf("output %q, error %v; want %q", out.String(), err, c.want)
			}
		})
	}
	if !strings.Contains(usage, "kubectl rewire version") {
		t.Error("usage does not list version")
	}
}
