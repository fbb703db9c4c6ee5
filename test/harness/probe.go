package harness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Echo serves UDP and TCP echo on port inside a pod netns until Close.
type Echo struct {
	udp *net.UDPConn
	tcp net.Listener
	wg  sync.WaitGroup
}

// StartEcho starts the servers inside netns, listening on every address.
func StartEcho(netns ns.NetNS, port int) (*Echo, error) {
	e := &Echo{}
	err := netns.Do(func(ns.NetNS) error {
		var err error
		// Both families: a dual-stack socket each.
		if e.udp, err = net.ListenUDP("udp", &net.UDPAddr{Port: port}); err != nil {
			return err
		}
		deepBuffer(e.udp)
		e.tcp, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		e.Close()
		return nil, err
	}
	e.wg.Add(2)
	go func() {
		defer e.wg.Done()
		buf := make([]byte, 1500)
		for {
			n, from, err := e.udp.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = e.udp.WriteToUDP(buf[:n], from)
		}
	}()
	go func() {
		defer e.wg.Done()
		for {
			c, err := e.tcp.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return e, nil
}

// Close stops the servers.
func (e *Echo) Close() {
	if e.udp != nil {
		e.udp.Close()
	}
	if e.tcp != nil {
		e.tcp.Close()
	}
	e.wg.Wait()
}

// ProbeStats is what a Prober saw.
type ProbeStats struct {
	Sent, Received int
	// MaxGap is the longest time between two consecutive replies.
	MaxGap time.Duration
	// GapEnd is when the longest gap ended.
	GapEnd time.Time
	// LostAt are the send times of the lost probes.
	LostAt []time.Time
	// SendFailed counts probes the kernel refused to send (SendErr the
	// last error); they count as lost.
	SendFailed int
	SendErr    error
}

// Lost is the number of probes never answered.
func (s ProbeStats) Lost() int { return s.Sent - s.Received }

func (s ProbeStats) String() string {
	out := fmt.Sprintf("%d sent, %d lost, longest gap %.1f ms", s.Sent, s.Lost(), float64(s.MaxGap.Microseconds())/1000)
	if s.SendFailed > 0 {
		out += fmt.Sprintf(" (%d not sent: %v)", s.SendFailed, s.SendErr)
	}
	return out
}

// deepBuffer gives a UDP socket a receive buffer for seconds of 1 kHz
// probes (SO_RCVBUFFORCE: root, above net.core.rmem_max), so that a test
// process starved of CPU for a moment on a loaded machine reads the replies
// late instead of the kernel dropping them and the probes counting as lost.
func deepBuffer(c *net.UDPConn) {
	if raw, err := c.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
		})
	}
}

// Prober sends a numbered UDP probe every interval from a client netns to an
// echo server and records the replies.
type Prober struct {
	conn *net.UDPConn
	stop chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	sentAt   []time.Time // by sequence number
	got      map[uint32]bool
	sendErrs map[uint32]error // the probes the kernel refused to send
	arrivals []time.Time
}

// StartProber starts probing target ("ip:port") from netns.
func StartProber(netns ns.NetNS, target string, interval time.Duration) (*Prober, error) {
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	p := &Prober{stop: make(chan struct{}), got: map[uint32]bool{}, sendErrs: map[uint32]error{}}
	if err := netns.Do(func(ns.NetNS) error {
		p.conn, err = net.DialUDP("udp", nil, raddr)
		return err
	}); err != nil {
		return nil, err
	}
	deepBuffer(p.conn)
	p.wg.Add(2)
	go p.send(interval)
	go p.receive()
	return p, nil
}

func (p *Prober) send(interval time.Duration) {
	defer p.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	buf := make([]byte, 8)
	for seq := uint32(0); ; seq++ {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		binary.BigEndian.PutUint32(buf, seq)
		p.mu.Lock()
		p.sentAt = append(p.sentAt, time.Now())
		p.mu.Unlock()
		if _, err := p.conn.Write(buf); err != nil { // no route, or an ICMP error pending on the socket
			p.mu.Lock()
			p.sendErrs[seq] = err
			p.mu.Unlock()
		}
	}
}

func (p *Prober) receive() {
	defer p.wg.Done()
	buf := make([]byte, 64)
	for {
		n, err := p.conn.Read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil || n < 4 {
			continue // an ICMP error while a route is missing: the probe is lost
		}
		now := time.Now()
		p.mu.Lock()
		p.got[binary.BigEndian.Uint32(buf)] = true
		p.arrivals = append(p.arrivals, now)
		p.mu.Unlock()
	}
}

// Stats returns what was seen so far.
func (p *Prober) Stats() ProbeStats { return p.Window(time.Time{}, time.Now()) }

// Window returns what was seen between from and to: the probes sent in it
// (those sent in its last 10 ms only once they had time to come back), and
// the longest time without a reply inside it.
func (p *Prober) Window(from, to time.Time) ProbeStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	var st ProbeStats
	for seq, at := range p.sentAt {
		if at.Before(from) || at.After(to) || (to.Sub(at) < 10*time.Millisecond && time.Since(at) < 10*time.Millisecond) {
			continue
		}
		st.Sent++
		if p.got[uint32(seq)] {
			st.Received++
		} else {
			st.LostAt = append(st.LostAt, at)
		}
		if err, ok := p.sendErrs[uint32(seq)]; ok {
			st.SendFailed, st.SendErr = st.SendFailed+1, err
		}
	}
	last := time.Time{}
	for _, at := range p.arrivals {
		if at.Before(from) || at.After(to) {
			continue
		}
		if !last.IsZero() && at.Sub(last) > st.MaxGap {
			st.MaxGap, st.GapEnd = at.Sub(last), at
		}
		last = at
	}
	return st
}

// Stop stops sending, waits briefly for late replies and returns the stats.
func (p *Prober) Stop() ProbeStats {
	close(p.stop)
	time.Sleep(50 * time.Millisecond)
	p.conn.Close()
	p.wg.Wait()
	return p.Stats()
}

// Stream keeps a TCP connection busy: it writes a numbered 8-byte message
// every interval and checks each echo.
type Stream struct {
	conn net.Conn
	stop chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	echoed int
	err    error
}

// StartStream connects from netns to target and starts the exchange.
func StartStream(netns ns.NetNS, target string, interval time.Duration) (*Stream, error) {
	s := &Stream{stop: make(chan struct{})}
	if err := netns.Do(func(ns.NetNS) error {
		var err error
		s.conn, err = net.DialTimeout("tcp", target, 5*time.Second)
		return err
	}); err != nil {
		return nil, err
	}
	s.wg.Add(2)
	go s.write(interval)
	go s.read()
	return s, nil
}

func (s *Stream) write(interval time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	buf := make([]byte, 8)
	for i := uint64(0); ; i++ {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		binary.BigEndian.PutUint64(buf, i)
		_ = s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := s.conn.Write(buf); err != nil {
			s.fail(err)
			return
		}
	}
}

func (s *Stream) read() {
	defer s.wg.Done()
	buf := make([]byte, 8)
	for want := uint64(0); ; want++ {
		if _, err := io.ReadFull(s.conn, buf); err != nil {
			select {
			case <-s.stop:
			default:
				s.fail(err)
			}
			return
		}
		if got := binary.BigEndian.Uint64(buf); got != want {
			s.fail(fmt.Errorf("stream out of order: got message %d, want %d", got, want))
			return
		}
		s.mu.Lock()
		s.echoed++
		s.mu.Unlock()
	}
}

func (s *Stream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// Echoed is the number of messages echoed so far, and the first error.
func (s *Stream) Echoed() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.echoed, s.err
}

// Stop closes the connection and returns the count and the first error.
func (s *Stream) Stop() (int, error) {
	close(s.stop)
	time.Sleep(20 * time.Millisecond)
	s.conn.Close()
	s.wg.Wait()
	return s.Echoed()
}
