package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPluginStart times the plugin the runtime executes from its exec
// to the first byte of its request on rewired's socket, and to its exit
// when rewired answers at once. The listener is the benchmark's own (it
// answers without doing anything), so only the plugin's start, its
// request and its reply handling are measured. The same source built
// against the C library (as on other architectures) and a static C hello
// world run interleaved with it: the libc's share and this VM's floor for
// starting any process.
func BenchmarkPluginStart(b *testing.B) {
	dir := b.TempDir()
	sock := filepath.Join(dir, "rewired.sock")
	l, err := net.Listen("unix", sock)
	must(b, err)
	defer l.Close()
	hello, withLibc := filepath.Join(dir, "hello"), filepath.Join(dir, "rewire-libc")
	cc(b, bytes.NewBufferString("#include <unistd.h>\nint main(void){return write(1,\"{}\",2)!=2;}\n"), "-o", hello, "-x", "c", "-")
	cc(b, nil, "-o", withLibc, filepath.Join("..", "..", "shim", "rewire.c"))
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"bench","type":"rewire","socketPath":%q}`, sock)
	env := []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=bench", "CNI_NETNS=/var/run/netns/none", "CNI_IFNAME=eth0", "CNI_PATH=" + binDir}
	var firstByte, whole, libcFirstByte, libcWhole, floor []time.Duration
	for range *samples {
		fb, total := runPluginOnce(b, l, filepath.Join(binDir, "rewire"), conf, env)
		firstByte, whole = append(firstByte, fb), append(whole, total)
		fb, total = runPluginOnce(b, l, withLibc, conf, env)
		libcFirstByte, libcWhole = append(libcFirstByte, fb), append(libcWhole, total)
		start := time.Now()
		must(b, exec.Command(hello).Run())
		floor = append(floor, time.Since(start))
	}
	fmt.Printf("plugin start (median, p90 in brackets): exec to first byte on the socket %.2f ms (%.2f) | exec to exit, rewired answering at once, %.2f ms (%.2f) | "+
		"built against the C library: %.2f ms (%.2f) and %.2f ms (%.2f) | a static C hello world's exec to exit %.2f ms\n",
		ms(median(firstByte)), ms(p90(firstByte)), ms(median(whole)), ms(p90(whole)),
		ms(median(libcFirstByte)), ms(p90(libcFirstByte)), ms(median(libcWhole)), ms(p90(libcWhole)), ms(median(floor)))
	b.ReportMetric(ms(median(firstByte)), "first-byte-ms")
}

// runPluginOnce runs the plugin for one request that l answers with an
// empty result, and returns when the request's first byte arrived and
// when the plugin exited, both since its exec.
func runPluginOnce(b *testing.B, l net.Listener, plugin, conf string, env []string) (firstByte, total time.Duration) {
	cmd := exec.Command(plugin)
	cmd.Env, cmd.Stdin = env, bytes.NewBufferString(conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	start := time.Now()
	must(b, cmd.Start())
	served := make(chan error, 1)
	go func() { served <- answer(l, start, &firstByte) }()
	err := cmd.Wait()
	total = time.Since(start)
	if serr := <-served; serr != nil || err != nil || out.String() != "{}" {
		b.Fatalf("plugin: %v (listener: %v), output %q", err, serr, out.String())
	}
	return firstByte, total
}

// answer accepts one request, notes when its first byte arrived, reads it
// whole and answers as rewired does with an empty result.
func answer(l net.Listener, start time.Time, firstByte *time.Duration) error {
	c, err := l.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := r.Peek(1); err != nil {
		return err
	}
	*firstByte = time.Since(start)
	req, err := http.ReadRequest(r)
	if err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return err
	}
	_, err = c.Write([]byte("HTTP/1.1 200 OK\r\nRewire-Exit-Code: 0\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"))
	return err
}

// cc compiles a static C program (source from stdin when not nil).
func cc(b *testing.B, stdin *bytes.Buffer, args ...string) {
	cmd := exec.Command("cc", append([]string{"-O2", "-static"}, args...)...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("cc %v: %v: %s", args, err, out)
	}
}

// BenchmarkExecParallelism shows how much this machine gains from running
// plugins at once, which bounds what parallelAttach can gain: three execs
// of a reference plugin (host-local's VERSION) one after the other and at
// the same time, and the same for a static C hello world, next to two CPU
// loops (what the machine's cores allow).
func BenchmarkExecParallelism(b *testing.B) {
	hello := filepath.Join(b.TempDir(), "hello")
	cc(b, bytes.NewBufferString("int main(void){return 0;}\n"), "-o", hello, "-x", "c", "-")
	hostLocal := filepath.Join(tools, "host-local")
	run := func(path string) func() {
		return func() {
			cmd := exec.Command(path)
			cmd.Env = []string{"CNI_COMMAND=VERSION"}
			must(b, cmd.Run())
		}
	}
	spin := func() {
		x := 0
		for i := range 50_000_000 {
			x += i ^ (x >> 3)
		}
		sink.Add(int64(x))
	}
	for _, w := range []struct {
		name string
		n    int
		one  func()
	}{{"host-local VERSION", 3, run(hostLocal)}, {"static C hello world", 3, run(hello)}, {"CPU loop", 2, spin}} {
		var seq, par []time.Duration
		for range *samples {
			start := time.Now()
			for range w.n {
				w.one()
			}
			seq = append(seq, time.Since(start))
			start = time.Now()
			var wg sync.WaitGroup
			for range w.n {
				wg.Go(w.one)
			}
			wg.Wait()
			par = append(par, time.Since(start))
		}
		fmt.Printf("parallelism: %d x %s: one after the other %.2f ms, at once %.2f ms median (%.2fx)\n",
			w.n, w.name, ms(median(seq)), ms(median(par)), float64(median(par))/float64(median(seq)))
	}
}

var sink atomic.Int64
