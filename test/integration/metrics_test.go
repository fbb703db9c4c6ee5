package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/rewire-cni/rewire/pkg/migration"
	"github.com/rewire-cni/rewire/pkg/selection"
	"github.com/rewire-cni/rewire/test/harness"
)

// The Prometheus endpoint counts what the daemon did: CNI requests,
// delegate executions per plugin, store records, switches; on the socket
// and on --metrics-addr, which serves nothing else.
func TestMetrics(t *testing.T) {
	port, err := harness.FreePort()
	must(t, err)
	e := newEnv(t, envOpts{noStart: true})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	e.daemon.ExtraArgs = []string{"--metrics-addr", addr}
	must(t, e.daemon.Start())
	e.createNAD("default", "m-mv", e.macvlanConf("m-mv", "192.168.61"), nil)
	e.createNAD("default", "m-ptp", e.ptpConf(fmt.Sprintf("m-ptp-%d", e.n)), nil)
	p := e.newPod("default", "metrics", map[string]string{selection.NetworksAnnotation: "m-mv"})
	ctx := context.Background()
	_, err = e.rt.Add(ctx, p)
	must(t, err)
	setDefaultNetwork(t, p, "m-ptp")
	waitEvents(t, p, "NetworkSwitched", 1)

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics over TCP: %d", code)
	}
	for _, want := range []string{
		`(?m)^rewire_cni_requests_total\{command="ADD",result="ok"\} 1$`,
		`(?m)^rewire_cni_request_duration_seconds_count\{command="ADD"\} 1$`,
		`(?m)^rewire_delegate_duration_seconds_count\{plugin="bridge",command="ADD"\} 1$`,
		`(?m)^rewire_delegate_duration_seconds_count\{plugin="macvlan",command="ADD"\} 1$`,
		`(?m)^rewire_delegate_duration_seconds_count\{plugin="ptp",command="ADD"\} 1$`,
		`(?m)^rewire_delegate_duration_seconds_count\{plugin="bridge",command="DEL"\} 1$`,
		`(?m)^rewire_reconciles_total\{operation="switch",result="ok"\} 1$`,
		`(?m)^rewire_switch_duration_seconds_count 1$`,
		`(?m)^rewire_store_records 1$`,
		`(?m)^rewire_inflight_operations\{operation="ADD"\} 0$`,
	} {
		if !regexp.MustCompile(want).MatchString(body) {
			t.Errorf("metrics lack %s:\n%s", want, body)
		}
	}
	// The whole exposition parses with Prometheus' own parser, Go runtime
	// and process families next to Rewire's.
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("metrics do not parse: %v\n%s", err, body)
	}
	for _, name := range []string{"rewire_cni_requests_total", "go_goroutines", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"} {
		if fams[name] == nil {
			t.Errorf("metrics lack the %s family", name)
		}
	}
	// A NetworkMigration's progress as this node reported it (none of its
	// pods selected: all counts 0), gone with the migration.
	mig := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "rewire.io/v1alpha1", "kind": "NetworkMigration", "metadata": map[string]interface{}{"name": "metrics-mig"},
		"spec": map[string]interface{}{"from": "cluster", "to": "default/m-ptp", "podSelector": map[string]interface{}{"matchLabels": map[string]interface{}{"app": "none"}}},
	}}
	_, err = api.Dynamic.Resource(migration.GVR).Create(ctx, mig, metav1.CreateOptions{})
	must(t, err)
	progress := regexp.MustCompile(`(?m)^rewire_migration_pods\{migration="metrics-mig",state="total"\} 0$`)
	waitMetrics := func(what string, cond func(body string) bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if _, body := get("/metrics"); cond(body) {
				return
			}
		}
		t.Errorf("metrics never showed %s", what)
	}
	waitMetrics("the migration's progress", progress.MatchString)
	must(t, api.Dynamic.Resource(migration.GVR).Delete(ctx, "metrics-mig", metav1.DeleteOptions{}))
	waitMetrics("the deleted migration gone", func(body string) bool { return !strings.Contains(body, `migration="metrics-mig"`) })

	if code, _ := get("/debug/api"); code != http.StatusNotFound {
		t.Errorf("GET /debug/api over TCP: %d, want 404 (only metrics and health are exposed)", code)
	}
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("GET /readyz over TCP: %d", code)
	}
	if code, body, err := e.daemon.Get("/metrics"); err != nil || code != http.StatusOK || !regexp.MustCompile(`rewire_store_records 1`).MatchString(body) {
		t.Errorf("GET /metrics on the socket: %d %v", code, err)
	}
	must(t, e.rt.Del(ctx, p))
	e.assertNoLeaks()
}
