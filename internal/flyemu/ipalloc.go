package flyemu

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
)

// blockClaimPort is the TCP port an emulator binds on the first address of
// each loopback /24 it uses. Holding that listener is what makes a block
// ours: a second emulator (another test binary, another hangard) that picks
// the same block fails to bind and picks again.
const blockClaimPort = 47913

// ipAllocator hands out per-machine loopback addresses (127.A.B.N, N in
// 2..254) from /24 blocks claimed by this emulator instance.
type ipAllocator struct {
	mu     sync.Mutex
	claims []net.Listener
	cur    [2]byte // A, B of the block being filled
	next   int     // next host number in cur
	free   []netip.Addr
	inUse  map[netip.Addr]bool
}

func newIPAllocator() (*ipAllocator, error) {
	a := &ipAllocator{inUse: map[netip.Addr]bool{}}
	if err := a.claimBlock(); err != nil {
		return nil, err
	}
	return a, nil
}

// claimBlock picks a random 127.A.B.0/24 whose claim port is free and where
// nothing listens on the common service ports of its first hosts.
func (a *ipAllocator) claimBlock() error {
	for range 64 {
		A := byte(1 + rand.IntN(254)) // never 127.0.x.x, where 127.0.0.1 lives
		B := byte(rand.IntN(256))
		l, err := net.Listen("tcp", fmt.Sprintf("127.%d.%d.1:%d", A, B, blockClaimPort))
		if err != nil {
			continue
		}
		if blockBusy(A, B) {
			l.Close()
			continue
		}
		a.claims = append(a.claims, l)
		a.cur = [2]byte{A, B}
		a.next = 2
		return nil
	}
	return errors.New("claim a loopback address block: no free 127.x.y.0/24 found")
}

// blockBusy reports whether something already accepts connections on an
// address of the block at a port machines typically use.
func blockBusy(A, B byte) bool {
	for _, host := range []int{2, 3} {
		for _, port := range []int{8080, 80} {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.%d.%d.%d:%d", A, B, host, port), 50*time.Millisecond)
			if err == nil {
				c.Close()
				return true
			}
		}
	}
	return false
}

// alloc returns an unused address, claiming a new block when the current one
// is exhausted and no released address is waiting.
func (a *ipAllocator) alloc() (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next > 254 {
		if len(a.free) > 0 {
			ip := a.free[0]
			a.free = a.free[1:]
			a.inUse[ip] = true
			return ip, nil
		}
		if err := a.claimBlock(); err != nil {
			return netip.Addr{}, err
		}
	}
	ip := netip.AddrFrom4([4]byte{127, a.cur[0], a.cur[1], byte(a.next)})
	a.next++
	a.inUse[ip] = true
	return ip, nil
}

// release returns an address for reuse once the current block runs out.
func (a *ipAllocator) release(ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.inUse[ip] {
		return
	}
	delete(a.inUse, ip)
	a.free = append(a.free, ip)
}

// close gives the claimed blocks back.
func (a *ipAllocator) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, l := range a.claims {
		l.Close()
	}
	a.claims = nil
}
