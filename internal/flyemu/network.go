package flyemu

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
)

// Network modes (Config.Network, Emulator.NetworkMode).
const (
	// NetworkAuto picks NetworkNamespaces when this process can build
	// namespaces (root, with ip, nsenter and nft), else NetworkLoopback.
	NetworkAuto = "auto"
	// NetworkNamespaces runs every machine in its own network namespace with
	// a 6PN address, as on Fly: apps with a custom network are isolated.
	NetworkNamespaces = "namespaces"
	// NetworkLoopback runs machines in the host's network namespace, each
	// with its own 127.A.B.N address; nothing is isolated.
	NetworkLoopback = "loopback"
)

// machineNet is a machine's place on the network. It belongs to one start of
// the machine's life on a host, not to its id: a migration may change it.
type machineNet struct {
	addr   netip.Addr
	netns  string // namespace name; "" when the machine shares the host's
	veth   string // host side of the machine's link
	bridge string
}

// netBackend gives machines their network.
type netBackend interface {
	mode() string
	// attach gives a new machine of an app of org on network ("" = the
	// org's default network) an address (and in namespace mode a namespace).
	attach(ctx context.Context, org, network string) (machineNet, error)
	// detach frees what attach made; it is idempotent.
	detach(ctx context.Context, mn machineNet)
	// internet is the host address every machine reaches.
	internet() netip.Addr
	close(ctx context.Context) error
}

// newNetBackend builds the backend Config.Network asks for.
func (e *Emulator) newNetBackend(ctx context.Context) (netBackend, error) {
	switch e.cfg.Network {
	case NetworkLoopback:
		e.log.Info("network mode", "mode", NetworkLoopback, "reason", "configured")
		return newLoopbackNet()
	case NetworkNamespaces:
		if why := namespacesUnavailable(); why != "" {
			return nil, fmt.Errorf("network mode %q: %s", NetworkNamespaces, why)
		}
		nb, err := newNamespaceNet(ctx, e.log)
		if err != nil {
			return nil, fmt.Errorf("network mode %q: %w", NetworkNamespaces, err)
		}
		e.log.Info("network mode", "mode", NetworkNamespaces, "reason", "configured", "internet", nb.internet())
		return nb, nil
	case "", NetworkAuto:
		if why := namespacesUnavailable(); why != "" {
			e.log.Info("network mode", "mode", NetworkLoopback, "reason", why)
			return newLoopbackNet()
		}
		nb, err := newNamespaceNet(ctx, e.log)
		if err != nil {
			e.log.Warn("network mode", "mode", NetworkLoopback, "reason", "namespaces failed", "error", err)
			return newLoopbackNet()
		}
		e.log.Info("network mode", "mode", NetworkNamespaces, "reason", "root with ip, nsenter and nft", "internet", nb.internet())
		return nb, nil
	}
	return nil, fmt.Errorf("network mode %q: want %q, %q or %q", e.cfg.Network, NetworkAuto, NetworkNamespaces, NetworkLoopback)
}

// namespacesUnavailable says why namespace mode cannot run here ("" if it can).
func namespacesUnavailable() string {
	if !namespacesSupported {
		return "network namespaces need Linux"
	}
	if os.Geteuid() != 0 {
		return "not running as root"
	}
	for _, tool := range []string{"ip", "nsenter", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found on PATH"
		}
	}
	return ""
}

// NetworkMode reports how machines are networked: NetworkNamespaces or
// NetworkLoopback.
func (e *Emulator) NetworkMode() string { return e.net.mode() }

// InternetAddr is the host address standing for the internet: every machine
// reaches it (through its default route in namespace mode), so servers that
// machines must reach (the daemon's public listener, test git servers) bind
// on it, or on [::]. Nothing else on the host is reachable from an isolated
// machine.
func (e *Emulator) InternetAddr() netip.Addr { return e.net.internet() }

// loopbackNet is NetworkLoopback: machines share the host's network and get
// loopback addresses of their own.
type loopbackNet struct{ ips *ipAllocator }

func newLoopbackNet() (*loopbackNet, error) {
	ips, err := newIPAllocator()
	if err != nil {
		return nil, err
	}
	return &loopbackNet{ips: ips}, nil
}

func (l *loopbackNet) mode() string { return NetworkLoopback }

func (l *loopbackNet) attach(context.Context, string, string) (machineNet, error) {
	ip, err := l.ips.alloc()
	if err != nil {
		return machineNet{}, err
	}
	return machineNet{addr: ip}, nil
}

func (l *loopbackNet) detach(_ context.Context, mn machineNet) { l.ips.release(mn.addr) }

func (l *loopbackNet) internet() netip.Addr { return netip.MustParseAddr("127.0.0.1") }

func (l *loopbackNet) close(context.Context) error {
	l.ips.close()
	return nil
}

// inNetns returns the command that runs path with args inside namespace
// netns. nsenter execs the program in place, so the pid, process group and
// parent-death signal of the launched process stay the program's.
func inNetns(netns, path string, args []string) (string, []string) {
	if netns == "" {
		return path, append([]string{path}, args...)
	}
	ns := nsenterPath()
	return ns, append([]string{ns, "--net=" + netnsDir + "/" + netns, "--", path}, args...)
}

// netnsDir is where ip netns keeps its named namespaces.
const netnsDir = "/run/netns"

func nsenterPath() string {
	if p, err := exec.LookPath("nsenter"); err == nil {
		return p
	}
	return "nsenter"
}
