//go:build chaos

package chaos

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// balancer is the load balancer in front of the replicas as agents see it:
// a TCP proxy on the emulator's internet address (the only host address
// machines reach) that sends each connection to the next replica that
// answers.
type balancer struct {
	ln  net.Listener
	URL string

	mu       sync.Mutex
	backends []string
	next     int
}

func newBalancer(t *testing.T, host string) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("balancer: %v", err)
	}
	b := &balancer{ln: ln, URL: "http://" + ln.Addr().String()}
	go b.serve()
	t.Cleanup(func() { ln.Close() })
	return b
}

func (b *balancer) add(addr string) {
	b.mu.Lock()
	b.backends = append(b.backends, addr)
	b.mu.Unlock()
}

func (b *balancer) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		go b.proxy(c)
	}
}

func (b *balancer) proxy(c net.Conn) {
	defer c.Close()
	b.mu.Lock()
	backends := append([]string(nil), b.backends...)
	start := b.next
	b.next++
	b.mu.Unlock()
	var up net.Conn
	for i := range backends {
		var err error
		up, err = net.DialTimeout("tcp", backends[(start+i)%len(backends)], 2*time.Second)
		if err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
}
