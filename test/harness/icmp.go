package harness

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

var pingIDs atomic.Uint32

// Pinger sends an ICMP echo request to an address every interval from the
// current network namespace (a raw socket: root) and records the replies,
// for pods whose image has no echo server.
type Pinger struct {
	conn net.PacketConn
	dst  *net.IPAddr
	v6   bool // ICMPv6 echo (the kernel computes its checksum)
	id   uint16
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	sent    int
	failed  int // sends the kernel refused (counted in sent: they are lost)
	lastErr error
	got     map[uint16]bool
	last    time.Time
	maxGap  time.Duration
}

// StartPinger starts pinging ip (IPv4 or IPv6).
func StartPinger(ip string, interval time.Duration) (*Pinger, error) {
	dst := net.ParseIP(ip)
	v6 := dst != nil && dst.To4() == nil
	network, laddr := "ip4:icmp", "0.0.0.0"
	if v6 {
		network, laddr = "ip6:ipv6-icmp", "::"
	}
	conn, err := net.ListenPacket(network, laddr)
	if err != nil {
		return nil, err
	}
	p := &Pinger{conn: conn, dst: &net.IPAddr{IP: dst}, v6: v6, id: uint16(pingIDs.Add(1)) ^ 0x5a00,
		stop: make(chan struct{}), got: map[uint16]bool{}}
	p.wg.Add(2)
	go p.send(interval)
	go p.receive()
	return p, nil
}

func (p *Pinger) send(interval time.Duration) {
	defer p.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for seq := uint16(0); ; seq++ {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		msg := []byte{8, 0, 0, 0, byte(p.id >> 8), byte(p.id), byte(seq >> 8), byte(seq)}
		if p.v6 {
			msg[0] = 128 // echo request
		} else {
			binary.BigEndian.PutUint16(msg[2:], checksum(msg))
		}
		_, err := p.conn.WriteTo(msg, p.dst)
		p.mu.Lock()
		p.sent++
		if err != nil {
			p.failed++
			p.lastErr = err
		}
		p.mu.Unlock()
	}
}

func (p *Pinger) receive() {
	defer p.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		reply := byte(0)
		if p.v6 {
			reply = 129
		}
		if n < 8 || buf[0] != reply || binary.BigEndian.Uint16(buf[4:]) != p.id || !from.(*net.IPAddr).IP.Equal(p.dst.IP) {
			continue
		}
		now := time.Now()
		p.mu.Lock()
		p.got[binary.BigEndian.Uint16(buf[6:])] = true
		if !p.last.IsZero() && now.Sub(p.last) > p.maxGap {
			p.maxGap = now.Sub(p.last)
		}
		p.last = now
		p.mu.Unlock()
	}
}

// Stats returns what was seen so far.
func (p *Pinger) Stats() ProbeStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return ProbeStats{Sent: p.sent, Received: len(p.got), MaxGap: p.maxGap, SendFailed: p.failed, SendErr: p.lastErr}
}

// LostSince returns how many of the probes sent after the first n have had
// no reply.
func (p *Pinger) LostSince(n int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	lost := 0
	for i := n; i < p.sent; i++ {
		if !p.got[uint16(i)] {
			lost++
		}
	}
	return lost
}

// Stop stops sending, waits briefly for late replies and returns the stats.
func (p *Pinger) Stop() ProbeStats {
	close(p.stop)
	time.Sleep(100 * time.Millisecond)
	p.conn.Close()
	p.wg.Wait()
	return p.Stats()
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
