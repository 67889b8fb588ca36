package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/hangarhq/hangar/daemon/config"
	"github.com/hangarhq/hangar/daemon/devenv"
	"github.com/hangarhq/hangar/daemon/service"
	"github.com/hangarhq/hangar/internal/flyemu"
	"github.com/hangarhq/hangar/internal/pool"
)

func init() {
	register("dev", "run the daemon with an embedded Fly emulator, for development and the demo", runDev)
}

// defaultDevCommand is what dev-pool sessions run when they name no command:
// HANGAR_DEV_COMMAND, else claude if installed, else bash.
func defaultDevCommand() string {
	if v := os.Getenv("HANGAR_DEV_COMMAND"); v != "" {
		return v
	}
	if _, err := exec.LookPath("claude"); err == nil {
		return "claude"
	}
	return "bash"
}

func runDev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	data := fs.String("data", ".hangar-dev", "data directory: keys, SQLite store, machine dirs, dev.env")
	listen := fs.String("listen", "127.0.0.1:7780", "HTTP listen address (port 0 picks a free one)")
	command := fs.String("command", defaultDevCommand(), "default command of dev-pool sessions (split on spaces; HANGAR_DEV_COMMAND)")
	agent := fs.String("agent", "", "hangar-agent binary run by emulated machines (default: beside hangard, else on PATH)")
	images := fs.String("images", "", "emulator image map file (JSON if *.json, else HCL) for other pools' images")
	imageStore := fs.String("image-store", os.Getenv("HANGAR_IMAGE_STORE"), "OCI image layout whose images the emulator boots as runc containers (HANGAR_IMAGE_STORE)")
	bootDelay := fs.Duration("boot-delay", 0, "emulated machine boot delay")
	standbyMode := fs.String("standby-mode", "stop", "dev pool standby mode: stop or suspend")
	minStandby := fs.Int("min-standby", 1, "dev pool standbys (0: none; applies when the dev pool is first created)")
	logFormat := fs.String("log-format", "text", "log format: json or text")
	logLevel := fs.String("log-level", "info", "log level")
	perSession := fs.Int("max-attaches-per-session", 0, "concurrent attachments per session (0: the default; -1: no limit)")
	perTenant := fs.Int("max-attaches-per-tenant", 0, "concurrent attachments per tenant (0: the default; -1: no limit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if *minStandby < 0 {
		return fmt.Errorf("--min-standby %d: want 0 or more", *minStandby)
	}
	cfg := config.Default()
	cfg.Listen, cfg.LogFormat, cfg.LogLevel = *listen, *logFormat, *logLevel
	cfg.SweepInterval = 5 * time.Second
	cfg.PoolRefresh = 5 * time.Second
	cfg.MaxAttachesPerSession, cfg.MaxAttachesPerTenant = *perSession, *perTenant
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := service.NewLogger(cfg, os.Stderr)

	opts := devenv.Options{DataDir: *data, AgentBinary: *agent, BootDelay: *bootDelay, ImageStore: *imageStore,
		MinStandby: minStandby, StandbyMode: pool.StandbyMode(*standbyMode), Logger: log}
	if *images != "" {
		m, err := flyemu.LoadImages(*images)
		if err != nil {
			return err
		}
		opts.Images = m
	}
	env, err := devenv.Prepare(ctx, opts)
	if err != nil {
		return err
	}
	defer env.Close()
	prepareImages(env.Emulator, log.Named("flyemu"))
	cfg.FlyAPIURL, cfg.FlyAPIToken, cfg.FlyOrg = env.FlyURL, env.FlyToken, devenv.Org
	cfg.StoreDSN, cfg.BrokerKey, cfg.AdminKey = env.StoreDSN, env.BrokerKey, env.AdminKey
	cfg.DaemonURL, cfg.FlyOIDCIssuer = env.DaemonURL, env.Emulator.OIDCIssuer(devenv.Org)

	d, err := service.Start(ctx, service.Options{
		Config: cfg, Logger: log, Workers: backgroundWorkers(), AgentListener: env.AgentListener,
		DefaultCommand: map[string][]string{devenv.PoolName: strings.Fields(*command)},
		AllowFileRepos: true,
	})
	if err != nil {
		return err
	}
	key, err := env.EnsureTenant(ctx, d.Store)
	if err != nil {
		d.Close()
		return err
	}
	p, err := env.WriteEnvFile(d.URL, key)
	if err != nil {
		d.Close()
		return err
	}
	fmt.Printf("hangard dev ready at %s (environment in %s)\n", d.URL, p)
	select {
	case <-ctx.Done():
	case <-d.Done():
	}
	return d.Close()
}
