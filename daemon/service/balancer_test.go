package service_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
)

// balancer is the load balancer in front of the replicas, as agents see it:
// a TCP proxy on the Fly emulator's internet address (the only host address
// emulated machines reach) that sends each new connection to one replica.
// Tests pick the replica (pin) to land a tunnel where they want it, and cut
// every proxied connection to drop tunnels the hard way.
type balancer struct {
	t   *testing.T
	ln  net.Listener
	URL string

	mu       sync.Mutex
	accepted int           // connections accepted so far
	arrived  chan struct{} // closed and replaced on every accepted connection
	backends []string      // replica listen addresses, in order of start
	pinned   string        // "" = round robin
	next     int
	conns    map[net.Conn]bool
}

func newBalancer(t *testing.T, host string) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("balancer: %v", err)
	}
	b := &balancer{t: t, ln: ln, URL: "http://" + ln.Addr().String(), conns: map[net.Conn]bool{}, arrived: make(chan struct{})}
	go b.serve()
	t.Cleanup(func() {
		ln.Close()
		b.cut()
	})
	return b
}

// add puts a replica (its listen address) behind the balancer.
func (b *balancer) add(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = append(b.backends, addr)
}

// remove takes a replica out (it was stopped).
func (b *balancer) remove(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, a := range b.backends {
		if a == addr {
			b.backends = append(b.backends[:i], b.backends[i+1:]...)
			break
		}
	}
	if b.pinned == addr {
		b.pinned = ""
	}
}

// pin sends every new connection to addr ("" = round robin again).
func (b *balancer) pin(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pinned = addr
}

// cut resets every proxied connection (agents' tunnels among them).
func (b *balancer) cut() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for c := range b.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // a reset, not a polite close
		}
		c.Close()
		n++
	}
	return n
}

func (b *balancer) pick() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pinned != "" {
		return b.pinned
	}
	if len(b.backends) == 0 {
		return ""
	}
	a := b.backends[b.next%len(b.backends)]
	b.next++
	return a
}

func (b *balancer) track(c net.Conn, on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if on {
		b.conns[c] = true
	} else {
		delete(b.conns, c)
	}
}

func (b *balancer) serve() {
	for {
		in, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		b.accepted++
		close(b.arrived)
		b.arrived = make(chan struct{})
		b.mu.Unlock()
		go b.proxy(in)
	}
}

// count is the number of connections accepted so far.
func (b *balancer) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.accepted
}

// waitBeyond waits until more than n connections were accepted.
func (b *balancer) waitBeyond(ctx context.Context, n int) error {
	for {
		b.mu.Lock()
		got, ch := b.accepted, b.arrived
		b.mu.Unlock()
		if got > n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("no connection to the balancer beyond %d: %w", n, ctx.Err())
		}
	}
}

func (b *balancer) proxy(in net.Conn) {
	defer in.Close()
	addr := b.pick()
	if addr == "" {
		return
	}
	out, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer out.Close()
	b.track(in, true)
	b.track(out, true)
	defer b.track(in, false)
	defer b.track(out, false)
	done := make(chan struct{}, 2)
	go func() { io.Copy(out, in); done <- struct{}{} }()
	go func() { io.Copy(in, out); done <- struct{}{} }()
	<-done
}
