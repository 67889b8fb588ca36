//go:build linux

package flyemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

const namespacesSupported = true

// stateDir holds one file per live emulator in namespace mode, naming its
// owner process, so that the next emulator can remove what a crashed one
// left behind (namespaces, links, lo address and nft table outlive it).
const stateDir = "/run/hangar-flyemu"

// netCmdTimeout bounds every ip / nft invocation.
const netCmdTimeout = 15 * time.Second

// maxLinks keeps "hg" + id + "v" + n within Linux's 15-byte interface names.
const maxLinks = 999999

// nsState is the content of an emulator's state file.
type nsState struct {
	PID       int    `json:"pid"`
	StartTime string `json:"start_time"` // /proc/<pid>/stat field 22: tells a reused pid apart
	Internet  string `json:"internet"`
}

// namespaceNet is NetworkNamespaces: a namespace and veth per machine, a
// bridge per 6PN network, the host as every network's gateway and the
// "internet" as a /128 on the host's lo, fenced by an nftables table.
//
// Names all carry the emulator's random id, so that parallel emulators
// (other test binaries) never collide and leftovers can be found:
// namespaces hgemu-<id>-<n>, bridges hg<id>b<n>, host veths hg<id>v<n>,
// table inet hgemu_<id>.
type namespaceNet struct {
	log       hclog.Logger
	id        string // 6 hex digits
	site      uint16 // the EEEE of fdaa:EEEE:NNNN::/64 and fd68:6e67:EEEE::1
	inet      netip.Addr
	statePath string

	mu       sync.Mutex
	closed   bool
	networks map[string]*sixpn // by org + "/" + network name
	nextNet  int
	nextLink int
	live     map[string]machineNet // by namespace name
}

// sixpn is one 6PN network: a bridge on the host with the gateway on it.
type sixpn struct {
	label    string
	bridge   string
	prefix   netip.Prefix
	gateway  netip.Addr
	isolated bool
	nextHost uint64
}

func newNamespaceNet(ctx context.Context, log hclog.Logger) (*namespaceNet, error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	removeStale(ctx, log)
	n := &namespaceNet{log: log, networks: map[string]*sixpn{}, live: map[string]machineNet{}}
	if err := n.claim(); err != nil {
		return nil, err
	}
	// pre: a packet from a machine for anything not on its own network and
	// not a host address would be routed to another network or out: reject
	// it at once (forwarding is off anyway; this makes it fast and holds if
	// it is on). With br_netfilter, traffic bridged within a network passes
	// here too: its destination routes back through the bridge it came from.
	// in: of the host's own addresses machines reach the internet one only.
	// out: isolated networks get a rule each refusing the host's new
	// connections (networkLocked).
	table := fmt.Sprintf(`table inet %[1]s {
	chain pre {
		type filter hook prerouting priority 0; policy accept;
		iifname "%[2]s*" meta l4proto tcp fib daddr type != local fib daddr . iif oif missing reject with tcp reset
		iifname "%[2]s*" meta l4proto udp fib daddr type != local fib daddr . iif oif missing reject
	}
	chain in {
		type filter hook input priority 0; policy accept;
		iifname "%[2]s*" ct state established,related accept
		iifname "%[2]s*" meta l4proto tcp ip6 daddr != %[3]s reject with tcp reset
		iifname "%[2]s*" meta l4proto udp ip6 daddr != %[3]s reject
		iifname "%[2]s*" meta nfproto ipv4 drop
	}
	chain out {
		type filter hook output priority 0; policy accept;
	}
}
`, n.table(), n.bridgePrefix(), n.inet)
	// Each nft and ip change waits for the kernel's RCU grace periods: run
	// them side by side.
	err := parallel(
		func() error { return runNet(ctx, table, "nft", "-f", "-") },
		func() error {
			return runNet(ctx, "", "ip", "-6", "addr", "add", n.inet.String()+"/128", "dev", "lo", "nodad")
		})
	if err != nil {
		_ = n.close(ctx)
		return nil, err
	}
	return n, nil
}

// claim picks the emulator's id and site prefix and writes its state file;
// creating that file exclusively is what reserves the id.
func (n *namespaceNet) claim() error {
	used := hostSites()
	start := procStartTime(os.Getpid())
	for range 32 {
		var b [5]byte
		_, _ = rand.Read(b[:])
		id := hex.EncodeToString(b[:3])
		site := binary.BigEndian.Uint16(b[3:])
		if site == 0 || used[site] {
			continue
		}
		inet := netip.AddrFrom16([16]byte{0xfd, 0x68, 0x6e, 0x67, byte(site >> 8), byte(site), 15: 1})
		st, _ := json.Marshal(nsState{PID: os.Getpid(), StartTime: start, Internet: inet.String()})
		path := filepath.Join(stateDir, id+".json")
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write state file: %w", err)
		}
		_, err = f.Write(st)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(path)
			return fmt.Errorf("write state file: %w", err)
		}
		n.id, n.site, n.inet, n.statePath = id, site, inet, path
		return nil
	}
	return errors.New("claim an emulator id: no free id found")
}

// hostSites lists the site numbers other emulators use on this host, from
// the host's addresses.
func hostSites() map[uint16]bool {
	out := map[uint16]bool{}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		b := p.Addr().As16()
		if (b[0] == 0xfd && b[1] == 0xaa) || (b[0] == 0xfd && b[1] == 0x68 && b[2] == 0x6e && b[3] == 0x67) {
			site := uint16(b[2])<<8 | uint16(b[3])
			if b[1] == 0x68 {
				site = uint16(b[4])<<8 | uint16(b[5])
			}
			out[site] = true
		}
	}
	return out
}

func (n *namespaceNet) table() string        { return "hgemu_" + n.id }
func (n *namespaceNet) bridgePrefix() string { return "hg" + n.id + "b" }

func (n *namespaceNet) mode() string         { return NetworkNamespaces }
func (n *namespaceNet) internet() netip.Addr { return n.inet }

// networkLocked returns the 6PN network of org's network name, creating its
// bridge on first use. Apps without a network share their org's default
// network, which the host may dial (on Fly the daemon sits on it); a custom
// network is isolated from the host's new connections too.
func (n *namespaceNet) networkLocked(ctx context.Context, org, network string) (*sixpn, error) {
	key := org + "/" + network
	if nw := n.networks[key]; nw != nil {
		return nw, nil
	}
	if n.nextNet >= 0xffff {
		return nil, errors.New("create 6PN network: too many networks")
	}
	n.nextNet++
	idx := uint16(n.nextNet)
	var b [16]byte
	b[0], b[1] = 0xfd, 0xaa
	b[2], b[3] = byte(n.site>>8), byte(n.site)
	b[4], b[5] = byte(idx>>8), byte(idx)
	prefix := netip.PrefixFrom(netip.AddrFrom16(b), 64)
	b[15] = 1
	label := network
	if label == "" {
		label = "default"
	}
	nw := &sixpn{
		label:    org + "/" + label,
		bridge:   fmt.Sprintf("%s%d", n.bridgePrefix(), idx),
		prefix:   prefix,
		gateway:  netip.AddrFrom16(b),
		isolated: network != "",
		nextHost: 2,
	}
	// The bridge gets a MAC address of its own: left unset, Linux gives a
	// bridge the lowest MAC of its ports and changes it whenever a machine
	// with a lower one joins or the owner leaves. The machines' neighbour
	// entries for the gateway then name a MAC nobody answers to, and every
	// connection of theirs stalls until neighbour discovery gives up on it
	// (about 25 s): a fresh clone cut its neighbours' tunnels that way. A
	// 6PN gateway on Fly does not change under a machine.
	mac := fmt.Sprintf("02:%02x:%02x:67:%02x:%02x", byte(n.site>>8), byte(n.site), byte(idx>>8), byte(idx))
	batch := fmt.Sprintf("link add %[1]s address %[3]s type bridge\nlink set %[1]s up\naddr add %[2]s/64 dev %[1]s nodad\n", nw.bridge, nw.gateway, mac)
	if err := runNet(ctx, batch, "ip", "-batch", "-"); err != nil {
		_ = runNet(ctx, "", "ip", "link", "del", nw.bridge)
		return nil, fmt.Errorf("create bridge for network %s: %w", nw.label, err)
	}
	if nw.isolated {
		rule := fmt.Sprintf("add rule inet %s out oifname %q meta l4proto { tcp, udp } ct state new reject\n", n.table(), nw.bridge)
		if err := runNet(ctx, rule, "nft", "-f", "-"); err != nil {
			_ = runNet(ctx, "", "ip", "link", "del", nw.bridge)
			return nil, fmt.Errorf("fence network %s off from the host: %w", nw.label, err)
		}
	}
	n.networks[key] = nw
	n.log.Info("6PN network created", "network", nw.label, "prefix", nw.prefix, "bridge", nw.bridge, "isolated", nw.isolated)
	return nw, nil
}

func (n *namespaceNet) attach(ctx context.Context, org, network string) (machineNet, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return machineNet{}, errors.New("attach machine: emulator network closed")
	}
	nw, err := n.networkLocked(ctx, org, network)
	if err != nil {
		n.mu.Unlock()
		return machineNet{}, err
	}
	if n.nextLink >= maxLinks {
		n.mu.Unlock()
		return machineNet{}, errors.New("attach machine: too many machines for one emulator")
	}
	n.nextLink++
	k := n.nextLink
	b := nw.prefix.Addr().As16()
	binary.BigEndian.PutUint64(b[8:], nw.nextHost)
	nw.nextHost++
	mn := machineNet{
		addr:   netip.AddrFrom16(b),
		netns:  fmt.Sprintf("hgemu-%s-%d", n.id, k),
		veth:   fmt.Sprintf("hg%sv%d", n.id, k),
		bridge: nw.bridge,
	}
	n.live[mn.netns] = mn
	n.mu.Unlock()

	host := fmt.Sprintf("netns add %[1]s\nlink add %[2]s master %[3]s up type veth peer name eth0 netns %[1]s\n", mn.netns, mn.veth, mn.bridge)
	err = runNet(ctx, host, "ip", "-batch", "-")
	if err == nil {
		inside := fmt.Sprintf("link set lo up\nlink set eth0 up\naddr add %s/64 dev eth0 nodad\nroute add default via %s dev eth0\n", mn.addr, nw.gateway)
		err = runNet(ctx, inside, "ip", "-n", mn.netns, "-batch", "-")
	}
	if err != nil {
		n.detach(ctx, mn)
		return machineNet{}, fmt.Errorf("attach machine to network %s: %w", nw.label, err)
	}
	return mn, nil
}

func (n *namespaceNet) detach(ctx context.Context, mn machineNet) {
	if mn.netns == "" {
		return
	}
	n.mu.Lock()
	_, ok := n.live[mn.netns]
	delete(n.live, mn.netns)
	n.mu.Unlock()
	if !ok {
		return
	}
	// Deleting the host end takes the pair down even when a straggler keeps
	// the namespace itself alive.
	batch := fmt.Sprintf("link del %s\nnetns del %s\n", mn.veth, mn.netns)
	if err := runNet(ctx, batch, "ip", "-force", "-batch", "-"); err != nil {
		n.log.Warn("remove machine network", "netns", mn.netns, "veth", mn.veth, "error", err)
	}
}

// close removes every namespace, link, address and table this emulator made.
func (n *namespaceNet) close(ctx context.Context) error {
	n.mu.Lock()
	n.closed = true
	var batch strings.Builder
	for ns, mn := range n.live {
		fmt.Fprintf(&batch, "link del %s\nnetns del %s\n", mn.veth, ns)
	}
	for _, nw := range n.networks {
		fmt.Fprintf(&batch, "link del %s\n", nw.bridge)
	}
	n.live, n.networks = map[string]machineNet{}, map[string]*sixpn{}
	n.mu.Unlock()
	var errs []error
	if n.inet.IsValid() {
		fmt.Fprintf(&batch, "addr del %s/128 dev lo\n", n.inet)
		err := parallel(
			func() error {
				if err := runNet(ctx, batch.String(), "ip", "-force", "-batch", "-"); err != nil {
					return fmt.Errorf("remove emulator network: %w", err)
				}
				return nil
			},
			func() error {
				err := runNet(ctx, "", "nft", "delete", "table", "inet", n.table())
				if err != nil && !strings.Contains(err.Error(), "No such file") {
					return fmt.Errorf("remove nft table: %w", err)
				}
				return nil
			})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if n.statePath != "" {
		if err := os.Remove(n.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove state file: %w", err))
		}
	}
	return errors.Join(errs...)
}

// removeStale removes what emulators whose process is gone left behind.
func removeStale(ctx context.Context, log hclog.Logger) {
	ents, err := os.ReadDir(stateDir)
	if err != nil {
		return
	}
	for _, de := range ents {
		id, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok {
			continue
		}
		path := filepath.Join(stateDir, de.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var st nsState
		if json.Unmarshal(b, &st) == nil && st.PID > 0 && procStartTime(st.PID) == st.StartTime {
			continue // its owner still runs
		}
		removeLeftovers(ctx, id, st.Internet)
		os.Remove(path)
		log.Info("removed leftovers of a dead emulator", "id", id, "pid", st.PID)
	}
}

// removeLeftovers deletes everything named after emulator id.
func removeLeftovers(ctx context.Context, id, internet string) {
	var batch strings.Builder
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			if strings.HasPrefix(i.Name, "hg"+id) {
				fmt.Fprintf(&batch, "link del %s\n", i.Name)
			}
		}
	}
	if ents, err := os.ReadDir(netnsDir); err == nil {
		for _, de := range ents {
			if strings.HasPrefix(de.Name(), "hgemu-"+id+"-") {
				fmt.Fprintf(&batch, "netns del %s\n", de.Name())
			}
		}
	}
	if a, err := netip.ParseAddr(internet); err == nil {
		fmt.Fprintf(&batch, "addr del %s/128 dev lo\n", a)
	}
	_ = runNet(ctx, batch.String(), "ip", "-force", "-batch", "-")
	_ = runNet(ctx, "", "nft", "delete", "table", "inet", "hgemu_"+id)
}

// procStartTime returns field 22 of /proc/<pid>/stat ("" if pid is gone).
func procStartTime(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// runNet runs an ip or nft command with stdin, bounded in time.
func runNet(ctx context.Context, stdin, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, netCmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// parallel runs fns at once and joins their errors.
func parallel(fns ...func() error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
