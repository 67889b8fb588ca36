package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hangarhq/hangar/internal/flyemu"
)

func init() {
	register("flyemu", "serve a local emulator of the Fly Machines API", runFlyemu)
}

func runFlyemu(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("flyemu", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:4280", "address to listen on (port 0 picks a free one)")
	data := fs.String("data", "", "directory for machine working dirs and logs (default: a temporary directory removed on exit)")
	token := fs.String("token", "", "require this API token (Bearer or FlyV1)")
	bootDelay := fs.Duration("boot-delay", 0, "time a machine spends in starting before it is started")
	latency := fs.Duration("latency", 0, "added to every API call")
	faultRate := fs.Float64("fault-rate", 0, "share (0..1) of API calls failing with 429, 500 or a dropped connection")
	faultSeed := fs.Uint64("fault-seed", 1, "seed of the fault injector")
	noRateLimits := fs.Bool("no-rate-limits", false, "turn off Fly's per-action rate limits (on by default, as on Fly)")
	retryAfter := fs.Bool("retry-after", false, "send Retry-After with rate-limit 429s (Fly does not promise one)")
	timeoutRate := fs.Float64("timeout-rate", 0, "share of API calls (0..1) answered 408")
	notFoundAfterCreate := fs.Duration("not-found-after-create", 0, "answer 404 to reads of apps and machines this young")
	noBatchMetadata := fs.Bool("no-batch-metadata", false, "answer 404 on the batch metadata endpoint")
	snapshotLossRate := fs.Float64("snapshot-loss-rate", 0, "share of resumes (0..1) whose suspend snapshot is lost (a cold boot)")
	unstartable := fs.Duration("unstartable-after-create", 0, "refuse (412) to start machines created with skip_launch this young, as machines stuck in created")
	images := fs.String("images", "", "image map file (JSON if named *.json, else HCL)")
	imageStore := fs.String("image-store", os.Getenv("HANGAR_IMAGE_STORE"), "OCI image layout whose images machines boot as runc containers (make worker-image fills it; HANGAR_IMAGE_STORE)")
	agent := fs.String("agent", "", "binary run for unmapped images (default: hangar-agent beside hangard, else on PATH)")
	org := fs.String("org", "personal", "default organization slug")
	region := fs.String("region", "iad", "region of machines created without one")
	logLevel := fs.String("log-level", "info", "log level (trace, debug, info, warn, error)")
	logOutput := fs.Bool("log-machines", false, "also log every line machines print")
	network := fs.String("network", flyemu.NetworkAuto, "machine networking: auto (namespaces when root with ip, nsenter and nft), namespaces or loopback")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "flyemu", Level: hclog.LevelFromString(*logLevel), Output: os.Stderr})
	cfg := flyemu.Config{
		DataDir:                *data,
		AgentBinary:            *agent,
		Org:                    *org,
		Region:                 *region,
		Token:                  *token,
		BootDelay:              *bootDelay,
		Latency:                *latency,
		FaultRate:              *faultRate,
		FaultSeed:              *faultSeed,
		NoRateLimits:           *noRateLimits,
		RetryAfter:             *retryAfter,
		TimeoutRate:            *timeoutRate,
		NotFoundAfterCreate:    *notFoundAfterCreate,
		NoBatchMetadata:        *noBatchMetadata,
		SnapshotLossRate:       *snapshotLossRate,
		UnstartableAfterCreate: *unstartable,
		Logger:                 log,
		LogProcessOutput:       *logOutput,
		Network:                *network,
		ImageStore:             *imageStore,
	}
	if *images != "" {
		m, err := flyemu.LoadImages(*images)
		if err != nil {
			return err
		}
		cfg.Images = m
	}
	emu, err := flyemu.NewContext(ctx, cfg)
	if err != nil {
		return err
	}
	defer emu.Close()
	prepareImages(emu, log)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	base := "http://" + ln.Addr().String()
	emu.SetBaseURL(base)
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	// The base URL (without /v1) is the one line on stdout, for scripts.
	fmt.Println(base)
	log.Info("fly emulator listening", "url", base, "data", emu.DataDir(), "network", emu.NetworkMode(), "internet", emu.InternetAddr())

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	// Closing the emulator first ends long-polling waits, so Shutdown is quick.
	closeErr := emu.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return errors.Join(closeErr, fmt.Errorf("shutdown: %w", err))
	}
	return closeErr
}

// prepareImages unpacks the store's images in the background, so that the
// first machine of an image does not wait for it.
func prepareImages(emu *flyemu.Emulator, log hclog.Logger) {
	st := emu.ImageStore()
	if st == nil {
		return
	}
	refs, err := st.Refs()
	if err != nil {
		log.Warn("image store", "dir", st.Dir(), "error", err)
		return
	}
	log.Info("image store: machines of these images run as containers", "dir", st.Dir(), "images", refs)
	go func() {
		for _, r := range refs {
			if _, err := emu.PrepareImage(r); err != nil {
				log.Warn("unpack image", "image", r, "error", err)
			}
		}
	}()
}
