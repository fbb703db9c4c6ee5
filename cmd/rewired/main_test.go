package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/rewire-cni/rewire/pkg/version"
)

// rewired's command line: help lists the subcommands and the daemon's
// flags without starting it, version prints the version, a wrong flag or
// command exits 2 saying why, and the daemon gets the flags it was given.
func TestCommandLine(t *testing.T) {
	defer func(v string) { version.Version = v }(version.Version)
	version.Version = "v1.2.3-test"
	help := []string{"Usage:", "rewired [flags]", "install", "inspect", "version", "help", "rewire-offline", "-metrics-addr", "-state-dir"}
	for _, c := range []struct {
		name       string
		args       []string
		code       int
		stdout     []string
		stderr     []string
		daemonRuns bool
	}{
		{"--help", []string{"--help"}, 0, help, nil, false},
		{"-h", []string{"-h"}, 0, help, nil, false},
		{"help", []string{"help"}, 0, help, nil, false},
		{"version", []string{"version"}, 0, []string{fmt.Sprintf("rewired v1.2.3-test (%s, %s/%s)\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)}, nil, false},
		{"version with an argument", []string{"version", "x"}, 1, nil, []string{"rewired version: takes no arguments"}, false},
		{"inspect without a pod", []string{"inspect"}, 1, nil, []string{"usage: rewired inspect"}, false},
		{"unknown flag", []string{"--bogus"}, 2, nil, []string{"flag provided but not defined: -bogus", "Commands:"}, false},
		{"unknown command", []string{"bogus"}, 2, nil, []string{`unknown command "bogus"`, "Commands:"}, false},
		{"daemon", []string{"--metrics-addr", ":9721", "--log-level", "debug"}, 0, nil, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			var got *options
			code := rewired(c.args, &stdout, &stderr, func(o options) error { got = &o; return nil })
			if code != c.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, c.code, stderr.String())
			}
			for _, want := range c.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
				}
			}
			for _, want := range c.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
			if (got != nil) != c.daemonRuns {
				t.Fatalf("daemon ran: %v, want %v", got != nil, c.daemonRuns)
			}
			if got != nil && (got.metricsAddr != ":9721" || got.logLevel != "debug" || !got.logLevelSet) {
				t.Errorf("daemon options %+v", *got)
			}
		})
	}
}

// The built binary: --help and version as a user sees them, with the
// version given at link time.
func TestBinaryHelpAndVersion(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "rewired")
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X github.com/rewire-cni/rewire/pkg/version.Version=v9.8.7-test", ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "rewired v9.8.7-test (go") {
		t.Errorf("rewired version: %q, %v", out, err)
	}
	out, err = exec.Command(bin, "--help").Output()
	if err != nil {
		t.Fatalf("rewired --help: %v", err)
	}
	for _, c := range subcommands {
		if !strings.Contains(string(out), "  "+c.name+" ") {
			t.Errorf("--help does not list %s:\n%s", c.name, out)
		}
	}
}

// rewire_migration_pods reports, per migration, the counts this node
// wrote in the migration's status, and nothing for migrations this node has
// not reported on.
func TestMigrationProgress(t *testing.T) {
	mig := func(name string, nodes map[string]interface{}) interface{} {
		return &unstructured.Unstructured{Object: map[string]interface{}{
			"apiVersion": "rewire.io/v1alpha1", "kind": "NetworkMigration",
			"metadata": map[string]interface{}{"name": name},
			"spec":     map[string]interface{}{"from": "cluster", "to": "kube-system/ptp"},
			"status":   map[string]interface{}{"nodes": nodes},
		}}
	}
	list := func() []interface{} {
		return []interface{}{
			mig("to-ptp", map[string]interface{}{
				"node-a": map[string]interface{}{"total": int64(5), "switched": int64(2), "failed": int64(1), "remaining": int64(2), "switching": int64(1)},
				"node-b": map[string]interface{}{"total": int64(9)},
			}),
			mig("elsewhere", map[string]interface{}{"node-b": map[string]interface{}{"total": int64(3)}}),
			"not a migration",
		}
	}
	var got []string
	migrationProgress(list, "node-a")(func(v float64, labels ...string) {
		got = append(got, fmt.Sprintf("%s %s %v", labels[0], labels[1], v))
	})
	want := []string{"to-ptp total 5", "to-ptp switched 2", "to-ptp failed 1", "to-ptp skipped 0", "to-ptp remaining 2", "to-ptp switching 1"}
	if !slices.Equal(got, want) {
		t.Fatalf("series %q, want %q", got, want)
	}
}
