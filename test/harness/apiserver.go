// Package harness runs the real parts the integration tests and the demo
// need: etcd and kube-apiserver processes, the rewired daemon, network
// namespaces, and a container-runtime stand-in that calls the rewire plugin
// through libcni exactly as containerd does.
package harness

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// APIServer is a running etcd + kube-apiserver pair.
type APIServer struct {
	Dir        string
	Kubeconfig string
	URL        string
	Config     *rest.Config
	Client     kubernetes.Interface
	Dynamic    dynamic.Interface

	etcd, apiserver *process
	apiserverArgs   []string
	tools           string
	addr            string // where kube-apiserver serves
}

const adminToken = "rewire-test-admin-token"

// StartAPIServer starts etcd and kube-apiserver from the tools directory
// with state under dir, waits until the API is ready and installs the
// CRDs of crdFiles (the NetworkAttachmentDefinition, Rewire's own).
func StartAPIServer(tools, dir string, crdFiles ...string) (*APIServer, error) {
	return StartAPIServerOn(tools, dir, "127.0.0.1", crdFiles...)
}

// StartAPIServerOn is StartAPIServer with kube-apiserver serving on the
// host address addr (etcd stays on loopback).
func StartAPIServerOn(tools, dir, addr string, crdFiles ...string) (*APIServer, error) {
	a := &APIServer{Dir: dir, tools: tools, addr: addr}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	a.etcd, err = startProcess(filepath.Join(dir, "etcd.log"), filepath.Join(tools, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"), "--unsafe-no-fsync",
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[1]), "--log-level", "error")
	if err != nil {
		return nil, err
	}
	if err := a.startAPIServer(etcdURL, ports[2]); err != nil {
		a.Stop()
		return nil, err
	}
	for _, f := range crdFiles {
		if err := a.installCRD(f); err != nil {
			a.Stop()
			return nil, err
		}
	}
	return a, nil
}

func (a *APIServer) startAPIServer(etcdURL string, port int) error {
	key, err := writeServiceAccountKey(a.Dir)
	if err != nil {
		return err
	}
	tokens := filepath.Join(a.Dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(adminToken+",admin,admin,system:masters\n"), 0o600); err != nil {
		return err
	}
	a.URL = fmt.Sprintf("https://%s:%d", a.addr, port)
	a.apiserverArgs = []string{filepath.Join(a.tools, "kube-apiserver"),
		"--etcd-servers", etcdURL, "--bind-address", a.addr, "--advertise-address", a.addr,
		"--secure-port", fmt.Sprint(port), "--cert-dir", filepath.Join(a.Dir, "certs"),
		"--service-account-issuer", "https://kubernetes.default.svc", "--service-account-key-file", key,
		"--service-account-signing-key-file", key, "--token-auth-file", tokens,
		"--authorization-mode", "RBAC", "--service-cluster-ip-range", "10.96.0.0/16",
		"--endpoint-reconciler-type", "none", "--disable-admission-plugins", "ServiceAccount",
		"--enable-priority-and-fairness=false", "--allow-privileged=true", "--v", "1"}
	if a.apiserver, err = startProcess(filepath.Join(a.Dir, "apiserver.log"), a.apiserverArgs...); err != nil {
		return err
	}
	if err := a.writeKubeconfig(); err != nil {
		return err
	}
	return a.waitReady(90 * time.Second)
}

func (a *APIServer) writeKubeconfig() error {
	a.Kubeconfig = filepath.Join(a.Dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, a.URL, adminToken)
	if err := os.WriteFile(a.Kubeconfig, []byte(kc), 0o600); err != nil {
		return err
	}
	a.Config = &rest.Config{Host: a.URL, BearerToken: adminToken, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 100, Burst: 200}
	var err error
	if a.Client, err = kubernetes.NewForConfig(a.Config); err != nil {
		return err
	}
	a.Dynamic, err = dynamic.NewForConfig(a.Config)
	return err
}

func (a *APIServer) waitReady(timeout time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if a.apiserver.exited() {
			break
		}
		req, _ := http.NewRequest(http.MethodGet, a.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after %s (log: %s)", timeout, filepath.Join(a.Dir, "apiserver.log"))
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installCRD creates the CRD and waits until it is served.
func (a *APIServer) installCRD(file string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(raw, &obj.Object); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	ctx := context.Background()
	if _, err := a.Dynamic.Resource(crdGVR).Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating CRD: %w", err)
	}
	group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
	plural, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "plural")
	versions, _, _ := unstructured.NestedSlice(obj.Object, "spec", "versions")
	version, _, _ := unstructured.NestedString(versions[0].(map[string]interface{}), "name")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, err := a.Dynamic.Resource(schema.GroupVersionResource{Group: group, Version: version, Resource: plural}).
			List(ctx, metav1.ListOptions{})
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("CRD %s not served after 30s", obj.GetName())
}

// StopAPIServer stops kube-apiserver only (etcd keeps the data), to test
// behaviour during an API outage. StartAgain brings it back.
func (a *APIServer) StopAPIServer() { a.apiserver.stop() }

// KillAPIServer kills kube-apiserver (SIGKILL: gone at once, where a stop
// lets it drain requests for a while); etcd keeps running.
func (a *APIServer) KillAPIServer() { a.apiserver.kill() }

// StartAgain restarts kube-apiserver on the same port and data.
func (a *APIServer) StartAgain() error {
	var err error
	if a.apiserver, err = startProcess(filepath.Join(a.Dir, "apiserver.log"), a.apiserverArgs...); err != nil {
		return err
	}
	return a.waitReady(90 * time.Second)
}

// Stop stops both processes.
func (a *APIServer) Stop() {
	a.apiserver.stop()
	a.etcd.stop()
}

func writeServiceAccountKey(dir string) (string, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "sa.key")
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	return path, os.WriteFile(path, b, 0o600)
}

// FreePort returns a TCP port free on 127.0.0.1 right now.
func FreePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// ToolsDir returns the directory of the built test tools: $REWIRE_TOOLS_DIR,
// or the output of hack/build-tools.sh (which builds them on first use).
func ToolsDir(repoRoot string) (string, error) {
	if d := os.Getenv("REWIRE_TOOLS_DIR"); d != "" {
		return d, nil
	}
	cmd := exec.Command(filepath.Join(repoRoot, "hack", "build-tools.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building test tools: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}
